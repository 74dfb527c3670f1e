"""Filling a store fast: finished executions inserted in bulk, in one transaction per batch.

Builds what a store looks like after weeks of use without running a million programs:
each row is a finished execution with one small chunk of output, sealed with its
checksum (and the same bytes inline, as a finished small execution has), 90 % succeeded,
8 % failed, 2 % cancelled, created 2.6 s apart over the 30 days before now, IDs made by
outspool's own ``new_id``.
SQLite: ``executemany``; PostgreSQL: ``COPY`` (binary).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from outspool import checksum
from outspool.codec import ChunkRecord
from outspool.jobs import new_id

SPAN = 30 * 86400.0
SPACING = SPAN / 1_000_000
BATCH = 50_000

EXEC_COLUMNS = (
    "id", "name", "status", "command", "pty", "exit_code", "worker_id", "created_at",
    "started_at", "finished_at", "last_output_at", "stdout_size", "chunk_count", "stdout",
)  # fmt: skip
CHUNK_COLUMNS = (
    "execution_id", "chunk_index", "stdout_offset", "stdout_size", "stderr_offset",
    "stderr_size", "codec", "timestamp", "stdout", "checksum",
)  # fmt: skip
COMMAND = json.dumps(["python3", "-c", "import sys; print('build step', sys.argv)"])


def _status(i: int) -> tuple[str, int | None]:
    k = i % 50
    if k < 4:
        return "failed", 1
    if k == 4:
        return "cancelled", None
    return "succeeded", 0


def rows(start: int, stop: int, t0: float) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """(executions row, chunk row) for executions number ``start`` to ``stop - 1``."""
    for i in range(start, stop):
        created = t0 + i * SPACING
        eid = new_id(created)
        status, code = _status(i)
        out = f"step {i}: compiled {i % 97} modules, {i % 13} warnings\nok\n".encode()
        chunk = ChunkRecord(eid, 0, 0, len(out), 0, 0, "raw", created + 0.4, None, out, None)
        yield (
            (eid, None, status, COMMAND, False, code, "bench-filler", created, created + 0.01,
             created + 0.5, created + 0.4, len(out), 1, out),
            (eid, 0, 0, len(out), 0, 0, "raw", created + 0.4, out, checksum.seal(chunk)),
        )  # fmt: skip


def _batches(start: int, stop: int, t0: float) -> Iterator[list[tuple[Any, ...]]]:
    for lo in range(start, stop, BATCH):
        yield list(rows(lo, min(stop, lo + BATCH), t0))


def fill(url: str, start: int, stop: int, t0: float) -> float:
    """Insert executions ``start .. stop-1``; seconds it took."""
    began = time.monotonic()
    if url.startswith("postgresql://"):
        _fill_postgres(url, start, stop, t0)
    else:
        _fill_sqlite(url, start, stop, t0)
    return time.monotonic() - began


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _fill_sqlite(path: str, start: int, stop: int, t0: float) -> None:
    conn = sqlite3.connect(path, timeout=60)
    try:
        for batch in _batches(start, stop, t0):
            with conn:
                conn.executemany(_insert("executions", EXEC_COLUMNS), (e for e, _ in batch))
                conn.executemany(
                    _insert("execution_output_chunks", CHUNK_COLUMNS), (c for _, c in batch)
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _fill_postgres(url: str, start: int, stop: int, t0: float) -> None:
    import psycopg
    from psycopg import sql

    from outspool.store.postgres import Target

    target = Target.parse(url)
    with psycopg.connect(target.conninfo) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema or "public"))
        )
        for batch in _batches(start, stop, t0):
            with conn.transaction(), conn.cursor() as cur:
                _copy(cur, "executions", EXEC_COLUMNS, (e for e, _ in batch))
                _copy(cur, "execution_output_chunks", CHUNK_COLUMNS, (c for _, c in batch))
        conn.execute("ANALYZE executions")
        conn.execute("ANALYZE execution_output_chunks")


def _copy(cur: Any, table: str, columns: tuple[str, ...], data: Any) -> None:
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in data:
            copy.write_row(row)


def random_ids(url: str, k: int, seed: int = 13) -> list[str]:
    """``k`` IDs of filler executions, spread over the whole store."""
    rng = random.Random(seed)
    query = "SELECT id FROM executions WHERE worker_id = 'bench-filler' ORDER BY created_at"
    if url.startswith("postgresql://"):
        import psycopg
        from psycopg import sql

        from outspool.store.postgres import Target

        target = Target.parse(url)
        with psycopg.connect(target.conninfo) as conn:
            conn.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema or "public"))
            )
            ids = [r[0] for r in conn.execute(query)]
    else:
        conn2 = sqlite3.connect(url)
        ids = [r[0] for r in conn2.execute(query)]
        conn2.close()
    return rng.sample(ids, min(k, len(ids)))
