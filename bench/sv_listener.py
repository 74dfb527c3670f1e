"""supervisord event listener: when the benchmarked program has exited, stop supervisord.

supervisord has no "run one program and exit" mode; this listener gives it one, so the
harness can time supervisord from start to the moment it has closed its log files.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main() -> int:
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        header = dict(token.split(":", 1) for token in sys.stdin.readline().split())
        payload = sys.stdin.read(int(header["len"]))
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()
        ended = header["eventname"] in ("PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL")
        if ended and "processname:producer" in payload:
            with open(sys.argv[1], "w") as mark:  # when supervisord reported the exit
                mark.write(f"{time.time():.6f}\n")
            os.kill(os.getppid(), signal.SIGTERM)
            return 0


if __name__ == "__main__":
    sys.exit(main())
