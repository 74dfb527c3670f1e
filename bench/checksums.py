"""What chunk checksums cost (issue 14, format 8): capture, encoding and reading.

``checksums-capture``: the same bulk program captured in this process with the library,
rounds alternating between the shipped writer and one whose encoder seals nothing (the
baseline: format 7's work, where only SQLite's segment files hash their bytes).
``checksums-encode``: the writer's CPU to encode the producer's exact writes in 1 MiB
chunks, with and without sealing (less noisy than whole captures on a busy machine).
``checksums-read``: reading one stored bulk execution back whole, with and without
verifying each chunk. The goal: no measurable slowdown of bulk capture.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from bench.common import Row, fresh_dir, producer
from bench.find import alternating, cpu_rows
from outspool import Outspool, Settings, codec
from outspool.codec import Encoder
from outspool.follow import iter_output
from outspool.store import core

SHIPPED = "outspool (chunk checksums, as shipped)"
BASELINE = "outspool without chunk checksums (baseline)"
BASELINE_SQLITE = "format 7 on SQLite: segment files' CRC only (baseline)"


@contextmanager
def _unsealed() -> Iterator[None]:
    """No sealing when encoding and no verifying when reading (only in this process)."""

    def nothing(*args: Any, **fields: Any) -> Any:
        return None

    def unchecked(record: Any, *args: Any) -> Any:
        return record

    # the encoder's view of the checksum module only: SQLite's segment files still hash
    # their blobs (checksum.blobs), as format 7 did
    encoder_view = SimpleNamespace(seal=nothing, blobs=nothing, of_fields=nothing)
    patches = [
        (codec, "checksum", encoder_view),
        (core, "verify", unchecked),
    ]
    kept = [getattr(module, name) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name, _), value in zip(patches, kept, strict=True):
            setattr(module, name, value)


def _note(rows: list[Row], key: str) -> None:
    """The first row's ``key`` against each baseline after it, as its note."""
    ours, a = rows[0], getattr(rows[0], key)
    notes = [
        f"{key} {100 * (a / b - 1):+.1f} % vs {base.contender.split(':')[0].split(' (')[0]}"
        for base in rows[1:]
        if a and (b := getattr(base, key))
    ]
    if notes:
        ours.note = "; ".join(notes)


def capture(kind: str, count: int, rounds: int) -> list[Row]:
    """Alternating rounds with and without checksums; medians of each figure."""
    rows = alternating(kind, count, rounds, (SHIPPED, BASELINE), _unsealed)
    _note(rows, "wall_s")
    return rows


def encode_cost(kind: str, count: int, rounds: int) -> list[Row]:
    """CPU of encoding the producer's writes in 1 MiB chunks (zstd as shipped): sealing each
    chunk, against format 7's work on SQLite (no seal, but a segment file's chunk hashed for
    its ``blob_crc``) and on PostgreSQL (nothing hashed)."""
    from bench.produce import chunks as writes
    from outspool.models import Stream
    from outspool.store.segments import THRESHOLD

    segments = [(Stream(fd), data) for fd, data in writes(kind, count)]
    pieces = [segments[i : i + 16] for i in range(0, len(segments), 16)]
    encoder = Encoder()
    cpu: dict[str, list[float]] = {SHIPPED: [], BASELINE_SQLITE: [], BASELINE: []}
    for _ in range(rounds):
        for name in (BASELINE, BASELINE_SQLITE, SHIPPED):
            with _unsealed() if name != SHIPPED else _nothing():
                began = time.process_time()
                for index, piece in enumerate(pieces):
                    record = encoder.encode("x", index, (0, 0), piece, 0.0)
                    out, err = record.stdout or b"", record.stderr or b""
                    if name == BASELINE_SQLITE and len(out) + len(err) >= THRESHOLD:
                        zlib.crc32(err, zlib.crc32(out))
                cpu[name].append(time.process_time() - began)
    return _cpu_rows(cpu, sum(len(d) for _, d in segments), rounds)


def read_cost(kind: str, count: int, rounds: int) -> list[Row]:
    """CPU of reading one stored execution back whole, verifying each chunk or not."""
    folder = fresh_dir("checksums-read")
    cpu: dict[str, list[float]] = {SHIPPED: [], BASELINE: []}
    with Outspool(str(folder / "t.db"), Settings.load()) as spool:
        ex = spool.run(producer(kind, count))
        for _ in range(rounds):
            for name in (BASELINE, SHIPPED):
                with _unsealed() if name == BASELINE else _nothing():
                    began = time.process_time()
                    for _piece in iter_output(spool.store, ex.id, None):
                        pass
                    cpu[name].append(time.process_time() - began)
    return _cpu_rows(cpu, ex.stdout_size + ex.stderr_size, rounds)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _cpu_rows(cpu: dict[str, list[float]], total: int, rounds: int) -> list[Row]:
    rows = cpu_rows(cpu, total, rounds)
    _note(rows, "cpu_s")
    return rows


def upgrades(size: int) -> list[Row]:
    """:func:`upgrade` on SQLite, then on PostgreSQL (in a schema of its own, dropped)."""
    from bench.scale.common import pg_schema

    rows = upgrade(size)
    with pg_schema("checksums") as url:
        rows += upgrade(size, url)
    return rows


def upgrade(size: int, url: str | None = None) -> list[Row]:
    """Time to open a format-7 store holding ``size`` bytes of chunk blobs in its rows
    (SQLite: inline chunks of 32 KiB, in ``url`` if it is a path; PostgreSQL at ``url``:
    chunks of 1 MiB), which computes every chunk's checksum; reported as seconds per GB of
    chunk data."""
    import os

    from outspool.jobs import Job
    from outspool.models import Stream
    from outspool.store import OutputUpdate, WriteBatch

    where = url or str(fresh_dir("checksums-upgrade") / "t.db")
    piece = 1 << 20 if where.startswith("postgresql") else 32 << 10
    data = os.urandom(piece)  # incompressible: stored as it is
    with Outspool(where, Settings.load(compression="none")) as spool:
        encoder = Encoder(compression="none")
        spool.store.create(Job(command=("x",)), "big", 1.0)
        count = size // piece
        for first in range(0, count, 64):
            indexes = range(first, min(first + 64, count))
            records = [
                encoder.encode("big", i, (i * piece, 0), [(Stream.STDOUT, data)], 2.0)
                for i in indexes
            ]
            update = OutputUpdate("big", (indexes[-1] + 1) * piece, 0, indexes[-1] + 1, 2.0)
            spool.store.write(WriteBatch(records, [update]))
        store = spool.store
    _downgrade(store)
    began = time.monotonic()
    with Outspool(where, Settings.load()):
        took = time.monotonic() - began
    total = count * piece
    name = "PostgreSQL" if where.startswith("postgresql") else "SQLite (inline chunks)"
    note = f"{took / (total / 1e9):.1f} s per GB of chunk data"
    return [Row(contender=f"upgrade to format 8, {name}", runs=1, wall_s=took, note=note)]


def _downgrade(store: object) -> None:
    """Back to format 7: the checksum column dropped (the rows then have none), and what
    later formats added (the capturing process's identity, format 9; the index of end
    times, format 10), which the upgrade adds again."""
    import contextlib
    import sqlite3

    from outspool.store.postgres import PostgresStore
    from outspool.store.sqlite import SqliteStore

    steps = [
        "ALTER TABLE execution_output_chunks DROP COLUMN checksum",
        "ALTER TABLE workers DROP COLUMN process",
        "DROP INDEX executions_ended",
        "UPDATE outspool_schema SET version = 7",
    ]
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            for step in steps:
                conn.execute(step)
        return
    assert isinstance(store, PostgresStore)
    with contextlib.closing(store.connect()) as pg:
        for step in steps:
            pg.execute(step)
