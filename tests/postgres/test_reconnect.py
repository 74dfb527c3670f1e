"""Dropped connections during a capture: the writer retries, nothing is lost or duplicated.

The server is not restarted (CI shares it): instead every connection of this test
(found by its ``application_name``) is terminated with ``pg_terminate_backend``,
while the program waits between phases, while it writes flat out, and inside a
commit (held at a table lock), so that the retried batch meets its own chunks.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import threading
import uuid
from pathlib import Path

import pytest
from psycopg import sql

from outspool import Outspool
from outspool.follow import read_all
from outspool.models import Stream
from outspool.settings import Settings
from tests.helpers import wait_until
from tests.postgres.database import admin
from tests.postgres.test_follow import release

pytestmark = pytest.mark.postgres

PHASES = 3
OUT_SIZE = 1 << 20  # stdout bytes per gated phase
ERR_SIZE = 1 << 14  # stderr bytes per gated phase
FLAT_OUT = 24 << 20  # stdout bytes of the last phase, written without pause

#: Deterministic output: gated phases on both streams, then a long stream on stdout.
PROGRAM = f"""
import os, random, sys
def write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:65536]):]
for phase in range({PHASES}):
    write(1, random.Random(phase).randbytes({OUT_SIZE}))
    write(2, random.Random(-1 - phase).randbytes({ERR_SIZE}))
    open(sys.argv[1]).read()
write(1, random.Random("flat").randbytes({FLAT_OUT}))
"""


def expected() -> tuple[bytes, bytes]:
    out = b"".join(random.Random(p).randbytes(OUT_SIZE) for p in range(PHASES))
    err = b"".join(random.Random(-1 - p).randbytes(ERR_SIZE) for p in range(PHASES))
    return out + random.Random("flat").randbytes(FLAT_OUT), err


def terminate(app: str) -> int:
    """End every server session of this test; how many there were."""
    with contextlib.closing(admin()) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            [app],
        ).fetchall()
    return len(rows)


def kill_inside_a_commit(app: str, pg_url: str, fifo: Path) -> int:
    """Hold a lock the writer's next commit needs, let output come, end the session, release.

    The chunk rows were inserted before the writer blocked, so its retry meets them.
    """
    executions = sql.Identifier(pg_url.rsplit("schema=", 1)[1], "executions")
    with contextlib.closing(admin()) as holder, holder.transaction():
        holder.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(executions))
        release(fifo)
        wait_until(lambda: waiting_on_lock(app), 60, "the writer blocked inside its commit")
        return terminate(app)


def waiting_on_lock(app: str) -> bool:
    with contextlib.closing(admin()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            [app],
        ).fetchone()
    return row is not None and row[0] == 1


def test_dropped_connections_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    app = f"outspool-test-{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={app}"
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    followed = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
    killed = 0
    with Outspool(url, Settings.load()) as spool:
        handle = spool.start([sys.executable, "-c", PROGRAM, str(fifo)])
        follower = handle.follow()

        def follow() -> None:
            for stream, piece in follower:
                assert isinstance(piece, bytes)
                followed[stream] += piece

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()

        def stored(size: int) -> None:
            wait_until(lambda: spool.get(handle.id).stdout_size >= size, 60, f"{size} B stored")

        for phase in range(PHASES - 1):
            stored((phase + 1) * OUT_SIZE)
            killed += terminate(app)  # idle pooled connections and the listener die
            release(fifo)
        stored(PHASES * OUT_SIZE)
        killed += kill_inside_a_commit(app, pg_url, fifo)
        stored(PHASES * OUT_SIZE + (2 << 20))
        killed += terminate(app)  # while the writer is busy committing
        handle.wait(120)
        assert spool.writer.stats.retries >= 1
        reader.join(60)
        out, err = expected()
        assert read_all(spool.store, handle.id, Stream.STDOUT) == out
        assert read_all(spool.store, handle.id, Stream.STDERR) == err
        ex = spool.get(handle.id)
        assert (ex.stdout_size, ex.stderr_size) == (len(out), len(err))
        chunks = spool.store.chunks_after(handle.id, -1, 1 << 20)
        assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        ends = [(0, 0)] + [
            (c.stdout_offset + c.stdout_size, c.stderr_offset + c.stderr_size) for c in chunks
        ]
        assert [(c.stdout_offset, c.stderr_offset) for c in chunks] == ends[:-1]  # none twice
    assert killed >= PHASES + 2
    assert bytes(followed[Stream.STDOUT]) == out
    assert bytes(followed[Stream.STDERR]) == err


#: Prints 60 numbered lines, a tenth of a second apart.
TRICKLE = "import time\nfor i in range(60):\n    print('line', i, flush=True); time.sleep(0.1)"


def test_a_follower_rides_through_connections_dropped_every_half_second(pg_url: str) -> None:
    """Issue 14, defect 9: the server stays up but ends the follower's connections every
    0.5 s; the follower gets every line. It used to give up ("no connection within N s"):
    the pool waited 1, 2, 4... s between connections it found dead."""
    app = f"outspool-test-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    killed = 0

    def drop_every_half_second() -> None:
        nonlocal killed
        while not stop.wait(0.5):
            killed += terminate(app)

    with Outspool(pg_url) as spool:  # the capture's connections are left alone
        handle = spool.start([sys.executable, "-c", TRICKLE])
        dropper = threading.Thread(target=drop_every_half_second, daemon=True)
        dropper.start()
        try:
            reader = Outspool(f"{pg_url}&application_name={app}", Settings.load(busy_timeout=3))
            with reader:
                followed = b"".join(
                    piece for _, piece in reader.follow(handle.id) if isinstance(piece, bytes)
                )
        finally:
            stop.set()
            dropper.join(30)
        assert handle.wait(60).exit_code == 0
        assert followed == spool.read(handle.id)
        assert followed.count(b"\n") == 60
    assert killed >= 2
