"""SQLite keeps large chunk blobs in segment files beside the database: exact, checked."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
from pathlib import Path

import pytest

from outspool.codec import Encoder, decode
from outspool.errors import StoreError
from outspool.jobs import Job
from outspool.models import Outcome, Status, Stream
from outspool.settings import Settings
from outspool.store import OutputUpdate, WriteBatch, open_store
from outspool.store.segments import THRESHOLD, WRITEBACK_STEP, Segments
from outspool.store.sqlite import SqliteStore

BIG_OUT = os.urandom(THRESHOLD)  # incompressible: stays this size, so it goes to a segment
BIG_ERR = os.urandom(1000)


def store_at(db: Path) -> SqliteStore:
    store = open_store(str(db), Settings.load())
    assert isinstance(store, SqliteStore)
    return store


def write(store: SqliteStore, execution_id: str, pieces: list[tuple[bytes, bytes]]) -> None:
    store.create(Job(command=("x",)), execution_id, 1.0)
    chunks, out_off, err_off = [], 0, 0
    for index, (out, err) in enumerate(pieces):
        segments = [(s, d) for s, d in ((Stream.STDOUT, out), (Stream.STDERR, err)) if d]
        chunks.append(Encoder().encode(execution_id, index, (out_off, err_off), segments, 2.0))
        out_off += len(out)
        err_off += len(err)
    store.write(
        WriteBatch(chunks, [OutputUpdate(execution_id, out_off, err_off, len(pieces), 2.0)])
    )


def test_large_chunks_go_to_a_segment_small_ones_stay_inline(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = store_at(db)
    try:
        write(store, "big", [(b"small\n", b""), (BIG_OUT, BIG_ERR), (b"tail\n", b"e\n")])
        chunks = [decode(r) for r in store.chunks_after("big", -1, 10)]
        assert [c.stdout for c in chunks] == [b"small\n", BIG_OUT, b"tail\n"]
        assert [c.stderr for c in chunks] == [b"", BIG_ERR, b"e\n"]
        store.finish("big", Outcome(Status.SUCCEEDED, 0), 3.0, None)
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT chunk_index, stdout IS NULL, blob_offset FROM execution_output_chunks"
        ).fetchall()
    assert rows == [(0, 0, None), (1, 1, 0), (2, 0, None)]
    segment = tmp_path / "s.db-chunks" / "big.seg"
    assert segment.stat().st_size == len(BIG_OUT) + len(BIG_ERR)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "remove"])
def test_a_damaged_segment_is_reported_never_returned(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "d.db"
    store = store_at(db)
    write(store, "hurt", [(BIG_OUT, b"")])
    store.close()
    segment = tmp_path / "d.db-chunks" / "hurt.seg"
    if damage == "flip a byte":
        data = bytearray(segment.read_bytes())
        data[100] ^= 1
        segment.write_bytes(bytes(data))
    elif damage == "truncate":
        segment.write_bytes(segment.read_bytes()[:-1])
    else:
        segment.unlink()
    store = store_at(db)
    try:
        with pytest.raises(StoreError, match="hurt"):
            store.chunks_after("hurt", -1, 10)
    finally:
        store.close()


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def dirty_pages(path: Path) -> int | None:
    """Pages of ``path`` waiting in the page cache to be written (Linux 6.5+ ``cachestat``,
    system call 451); None where the kernel cannot say."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole, stat = _Range(0, 0), _CacheStat()
        if libc.syscall(451, fd, ctypes.byref(whole), ctypes.byref(stat), 0) != 0:
            return None
        return int(stat.dirty)
    finally:
        os.close(fd)


def test_a_growing_segment_is_handed_to_the_disk_before_its_execution_ends(
    tmp_path: Path,
) -> None:
    # so that the fsync at the end of a large capture finds little left to write
    segments = Segments(tmp_path / "w.db")
    try:
        for _ in range(WRITEBACK_STEP // (1 << 20) + 1):
            segments.append("grow", os.urandom(1 << 20), b"")
        path = segments.path("grow")
        if not dirty_pages(path):
            pytest.skip("the kernel cannot say, or already wrote the file out by itself")
        segments.sync()  # what the checkpointer calls: the execution is still running
        assert dirty_pages(path) == 0
        segments.append("grow", b"more", b"")
        assert path.stat().st_size == (WRITEBACK_STEP // (1 << 20) + 1) * (1 << 20) + 4
    finally:
        segments.close()
