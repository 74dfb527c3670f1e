"""Baseline: the minimal Python capture loop.

``python bench/cap_pyloop.py OUT_PREFIX -- PROGRAM ARG...`` runs PROGRAM with its stdout and
stderr on pipes, reads whichever is ready in 64 KiB chunks and appends to OUT_PREFIX.out /
OUT_PREFIX.err. No database: this is the floor for any capture done in Python.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys


def main(argv: list[str]) -> int:
    prefix, command = argv[0], argv[argv.index("--") + 1 :]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    sinks = {
        proc.stdout.fileno(): open(prefix + ".out", "wb", buffering=0),  # noqa: SIM115
        proc.stderr.fileno(): open(prefix + ".err", "wb", buffering=0),  # noqa: SIM115
    }
    sel = selectors.DefaultSelector()
    for fd in sinks:
        sel.register(fd, selectors.EVENT_READ)
    while sinks:
        for key, _ in sel.select():
            fd = int(key.fd)
            data = os.read(fd, 65536)
            if data:
                sinks[fd].write(data)
            else:
                sel.unregister(fd)
                sinks.pop(fd).close()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
