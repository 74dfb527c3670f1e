"""Baseline: the problem the design document starts from, one INSERT per line.

``python bench/cap_naive.py DB JOURNAL_MODE -- PROGRAM ARG...`` stores every line of
PROGRAM's stdout and stderr as its own row, each in its own transaction (autocommit),
with SQLite's default ``synchronous`` for the journal mode given (``delete`` or ``wal``).
"""

from __future__ import annotations

import os
import selectors
import sqlite3
import subprocess
import sys

SCHEMA = """
CREATE TABLE IF NOT EXISTS output_lines (
    id INTEGER PRIMARY KEY,
    execution_id INTEGER NOT NULL,
    stream TEXT NOT NULL,
    data BLOB NOT NULL
)
"""
INSERT = "INSERT INTO output_lines (execution_id, stream, data) VALUES (?, ?, ?)"


def open_db(path: str, journal_mode: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute(f"PRAGMA journal_mode={journal_mode}")
    db.execute(SCHEMA)
    db.execute("CREATE INDEX IF NOT EXISTS output_lines_exec ON output_lines (execution_id, id)")
    return db


class LineSink:
    """Split one stream into lines and insert each one."""

    def __init__(self, db: sqlite3.Connection, execution_id: int, stream: str) -> None:
        self.db, self.execution_id, self.stream = db, execution_id, stream
        self.partial = b""
        self.lines = 0

    def feed(self, data: bytes) -> None:
        parts = (self.partial + data).split(b"\n")
        self.partial = parts.pop()
        for part in parts:
            self.db.execute(INSERT, (self.execution_id, self.stream, part + b"\n"))
        self.lines += len(parts)

    def close(self) -> None:
        if self.partial:
            self.db.execute(INSERT, (self.execution_id, self.stream, self.partial))


def main(argv: list[str]) -> int:
    path, journal_mode, command = argv[0], argv[1], argv[argv.index("--") + 1 :]
    execution_id = int(os.environ.get("BENCH_EXECUTION_ID", "1"))
    db = open_db(path, journal_mode)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    sinks = {
        proc.stdout.fileno(): LineSink(db, execution_id, "stdout"),
        proc.stderr.fileno(): LineSink(db, execution_id, "stderr"),
    }
    sel = selectors.DefaultSelector()
    for fd in sinks:
        sel.register(fd, selectors.EVENT_READ)
    while sinks:
        for key, _ in sel.select():
            fd = int(key.fd)
            data = os.read(fd, 65536)
            if data:
                sinks[fd].feed(data)
            else:
                sel.unregister(fd)
                sinks.pop(fd).close()
    code = proc.wait()
    db.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
