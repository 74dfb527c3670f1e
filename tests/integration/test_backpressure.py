"""A slow store stops the pipe being read instead of growing memory, and loses nothing."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from outspool import Outspool, Running, Settings, Status, Stream
from outspool.writer import Sink
from tests.helpers import blocked_writing_pipe, wait_until

TOTAL = 16 << 20
LIMIT = 256 << 10
READ = 64 << 10

# Waits for a go file (so the test can lock the store first), then writes TOTAL bytes
# of numbered lines to stdout and some to stderr.
CHILD = f"""
import os, sys, time
go = sys.argv[1]
deadline = time.monotonic() + 60
while not os.path.exists(go):
    assert time.monotonic() < deadline
    time.sleep(0.002)
line = 0
left = {TOTAL}
while left:
    piece = b"".join(b"%09d" % (line + i) + b"." * 40 + b"\\n" for i in range(1000))
    piece = piece[:left]
    line += 1000
    fd = 2 if line % 7 == 0 else 1
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view):]
    left -= len(piece)
"""


def expected_output() -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    line, left = 0, TOTAL
    while left:
        piece = b"".join(b"%09d" % (line + i) + b"." * 40 + b"\n" for i in range(1000))[:left]
        line += 1000
        (err if line % 7 == 0 else out).extend(piece)
        left -= len(piece)
    return bytes(out), bytes(err)


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection, as a busy process would."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_slow_store_bounds_memory_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "slow.db"
    go = tmp_path / "go"
    settings = Settings.load(max_pending_bytes=LIMIT, read_size=READ, busy_timeout=0.05)
    peak = 0
    with Outspool(str(db), settings) as spool:
        writer = spool.writer
        put = writer.put

        def measured_put(sink: Sink, stream: Stream, data: bytes, reserved: int = 0) -> None:
            nonlocal peak
            put(sink, stream, data, reserved)
            peak = max(peak, writer.pending_bytes)  # pending only grows in put

        writer.put = measured_put  # type: ignore[method-assign]
        handle: Running = spool.start([sys.executable, "-c", CHILD, str(go)])
        try:
            started = wait_until(lambda: spool.get(handle.id).pid, message="child pid")
            with write_lock(db):
                go.touch()
                wait_until(lambda: writer.pending_bytes >= LIMIT, message="backpressure")
                wait_until(lambda: blocked_writing_pipe(started), message="child blocked")
                assert handle.join(0) is False  # the program waits on its pipe, not finished
                assert writer.stats.commits == 0  # the store really refused every write
                held = peak
            ex = handle.wait(120)
        finally:
            go.touch()
            if not handle.join(0):
                handle.cancel(force=True)
        out, err = expected_output()
        assert ex.status is Status.SUCCEEDED
        assert spool.read(ex.id, Stream.STDOUT) == out
        assert spool.read(ex.id, Stream.STDERR) == err
    assert held == LIMIT  # reads reserve their room first: the bound is exact
    assert peak <= LIMIT
