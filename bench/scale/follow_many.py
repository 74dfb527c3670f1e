"""A follower process for the scale scenarios: follows executions, measures visibility.

``python -m bench.scale.follow_many URL SKIP ID...`` follows each ID in a thread of its own
through the library until it ends, and prints one JSON object: ``latencies`` (seconds from
each ``SEQ TIME tick`` line's send time until it reached this process, lines after the
first SKIP of each execution) and ``lines`` (how many tick lines it saw in all).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.scale.common import latencies


def main(argv: list[str]) -> int:
    from outspool import Outspool

    url, skip, ids = argv[0], int(argv[1]), argv[2:]
    seen: list[float] = []
    lines: list[float] = []
    lock = threading.Lock()

    with Outspool(url) as spool:

        def follow(execution_id: str) -> None:
            got: list[float] = []
            everything: list[float] = []
            for _stream, piece in spool.follow(execution_id):
                if not isinstance(piece, bytes):
                    continue  # a gap (none here: no output limit is reached)
                now = time.time()
                latencies(piece, now, got, skip)
                latencies(piece, now, everything)
            with lock:
                seen.extend(got)
                lines.extend(everything)

        threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in ids]
        for t in threads:
            t.start()
        print("following", flush=True)
        for t in threads:
            t.join()
    json.dump({"latencies": seen, "lines": len(lines)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
