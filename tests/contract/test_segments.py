"""SQLite keeps large chunk blobs in segment files beside the database: exact, checked."""

from __future__ import annotations

import contextlib
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
from outspool.store.segments import THRESHOLD
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
