"""A follower in another process for the baselines: poll the store every 10 ms, print new lines.

``python bench/follow_poll.py file PATH STOP_FILE``
``python bench/follow_poll.py naive DB STOP_FILE``
``python bench/follow_poll.py sketch DB STOP_FILE``

Each new complete line is written to stdout (flushed) as soon as it is seen; the harness
timestamps its arrival. It stops once STOP_FILE exists and nothing new was found.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sketch

INTERVAL = 0.010


def _stored(kind: str, path: str, conn: sqlite3.Connection | None) -> bytes:
    if kind == "file":
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return b""
    assert conn is not None
    try:
        if kind == "naive":
            rows = conn.execute("SELECT data FROM output_lines WHERE stream = 'stdout' ORDER BY id")
            return b"".join(r[0] for r in rows)
        return sketch.read_stream(conn, "1", "stdout")
    except sqlite3.OperationalError:  # table not created yet, or locked: try again
        return b""


def main(argv: list[str]) -> int:
    kind, path, stop = argv[0], argv[1], Path(argv[2])
    conn = None
    if kind != "file":
        while not Path(path).exists():
            time.sleep(INTERVAL)
        conn = sqlite3.connect(path, timeout=5)
    seen = 0
    while True:
        stopping = stop.exists()
        data = _stored(kind, path, conn)
        end = data.rfind(b"\n") + 1
        if end > seen:
            os.write(1, data[seen:end])
            seen = end
        elif stopping:
            return 0
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
