"""Stored output to damage: an execution written through the real store, and ways to hurt it.

:func:`stored` writes three chunks through the store (the writer's own encoder):
chunk 0 one stdout line; chunk 1 both streams, interleaved (a runs map), read over
several milliseconds (line times) and compressed; chunk 2, the last, both streams
again, raw and small. :func:`tamper` edits one column of one chunk row behind the
store's back, with SQL on the same database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

from outspool import Outspool
from outspool.codec import ZSTD, Encoder
from outspool.jobs import Job
from outspool.models import Outcome, Status, Stream
from outspool.store import OutputUpdate, WriteBatch
from outspool.store.postgres import PostgresStore
from outspool.store.sqlite import SqliteStore

OUT_1 = b"".join(b"stdout line %d of chunk one\n" % i for i in range(100))
ERR_1 = b"".join(b"stderr line %d of chunk one\n" % i for i in range(100))
#: (stream, bytes, read at ms) of each chunk, in arrival order.
CHUNKS: list[list[tuple[Stream, bytes, int]]] = [
    [(Stream.STDOUT, b"first line\n", 1_700_000_000_000)],
    [
        (Stream.STDOUT, OUT_1[:1500], 1_700_000_000_010),
        (Stream.STDERR, ERR_1, 1_700_000_000_020),
        (Stream.STDOUT, OUT_1[1500:], 1_700_000_000_030),
    ],
    [
        (Stream.STDOUT, b"hello\n", 1_700_000_000_040),
        (Stream.STDERR, b"bye\n", 1_700_000_000_041),
    ],
]
STDOUT = b"".join(d for chunk in CHUNKS for s, d, _ in chunk if s is Stream.STDOUT)
STDERR = b"".join(d for chunk in CHUNKS for s, d, _ in chunk if s is Stream.STDERR)
ALL = b"".join(d for chunk in CHUNKS for _, d, _ in chunk)


def stored(spool: Outspool, execution_id: str = "hurt", *, finished: bool = True) -> str:
    """Write :data:`CHUNKS` as an execution (``finished``, or running with a worker whose
    heartbeat stays fresh for an hour, so no follower finds it lost); its ID."""
    store = spool.store
    worker = None if finished else f"{execution_id}-worker"
    if worker is not None:
        store.register_worker(worker, "test", os.getpid(), "run", time.time() + 3600)
    store.create(Job(command=("x",)), execution_id, 1.0, worker_id=worker)
    offsets = [0, 0]
    records = []
    for index, reads in enumerate(CHUNKS):
        segments = [(s, d) for s, d, _ in reads]
        stamps = [ms for _, _, ms in reads]
        record = Encoder().encode(
            execution_id, index, (offsets[0], offsets[1]), segments, 0.0, stamps=stamps
        )
        records.append(record)
        offsets[0] += record.stdout_size
        offsets[1] += record.stderr_size
    assert records[1].codec == ZSTD and records[1].runs and records[1].line_times
    assert records[2].runs is not None and records[2].codec != ZSTD
    update = OutputUpdate(execution_id, offsets[0], offsets[1], len(records), 2.0)
    store.write(WriteBatch(records, [update]))
    if finished:
        store.finish(execution_id, Outcome(Status.SUCCEEDED, 0), 3.0, None)
    return execution_id


BIG_CHUNK = 1 << 20


def stored_big(spool: Outspool, execution_id: str, size: int) -> bytes:
    """A finished execution of ``size`` random stdout bytes in chunks of :data:`BIG_CHUNK`
    (SQLite keeps them in a segment file); its output."""
    data = os.urandom(size)
    spool.store.create(Job(command=("x",)), execution_id, 1.0)
    encoder = Encoder()
    for index, start in enumerate(range(0, size, BIG_CHUNK)):
        piece = [(Stream.STDOUT, data[start : start + BIG_CHUNK])]
        record = encoder.encode(execution_id, index, (start, 0), piece, 2.0)
        update = OutputUpdate(execution_id, start + len(piece[0][1]), 0, index + 1, 2.0)
        spool.store.write(WriteBatch([record], [update]))
    spool.store.finish(execution_id, Outcome(Status.SUCCEEDED, 0), 3.0, None)
    return data


def flip(bit: int) -> Callable[[Any], Any]:
    """Flip bit ``bit`` of a blob (counted from its end when negative)."""

    def change(value: bytes) -> bytes:
        data = bytearray(value)
        where = bit % (8 * len(data))
        data[where // 8] ^= 1 << (where % 8)
        return bytes(data)

    return change


def column(spool: Outspool, execution_id: str, index: int, name: str) -> Any:
    """One column of one chunk row, as stored."""
    query = (
        f"SELECT {name} FROM execution_output_chunks WHERE execution_id = %s AND chunk_index = %s"
    )
    with connection(spool.store) as run:
        rows = run(query, (execution_id, index))
    assert len(rows) == 1
    return rows[0][0]


def tamper(
    spool: Outspool, execution_id: str, index: int, name: str, change: Callable[[Any], Any]
) -> None:
    """Set one column of one chunk row to ``change(its value)``, behind the store's back."""
    value = change(column(spool, execution_id, index, name))
    query = (
        f"UPDATE execution_output_chunks SET {name} = %s "
        "WHERE execution_id = %s AND chunk_index = %s"
    )
    with connection(spool.store) as run:
        run(query, (value, execution_id, index))


@contextlib.contextmanager
def connection(store: object) -> Iterator[Callable[[str, tuple[Any, ...]], list[Any]]]:
    """A function running one SQL statement (``%s`` parameters) on ``store``'s database, on
    a connection of its own, committed at once; it returns the rows as tuples."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            yield lambda q, p: conn.execute(q.replace("%s", "?"), p).fetchall()
        return
    assert isinstance(store, PostgresStore)
    with contextlib.closing(store.connect()) as pg:

        def run(query: str, params: tuple[Any, ...]) -> Any:
            cur = pg.execute(query, params)
            return [tuple(r.values()) for r in cur.fetchall()] if cur.description else []

        yield run
