"""Damaged stored output is reported as damage, never returned as wrong bytes (issue 14,
defects 6 and 7): every chunk row carries a checksum over its blobs and every field a
reader trusts, checked on every read, on both backends."""

from __future__ import annotations

import contextlib
import random
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from outspool import Outspool, Settings
from outspool.errors import DamagedError, StoreError
from outspool.store import SCHEMA_VERSION
from outspool.store.postgres import PostgresStore
from outspool.store.sqlite import SqliteStore
from outspool.web.api import RAW_CHECKED
from tests.faults.damage import (
    ALL,
    BIG_CHUNK,
    CHUNKS,
    column,
    connection,
    flip,
    stored,
    stored_big,
    tamper,
)
from tests.helpers import run_cli
from tests.web.sse import collect, output_of

#: (chunk, column, change): each a kind of damage the issue found served as good bytes.
DAMAGE: dict[str, tuple[int, str, Callable[[Any], Any]]] = {
    "a bit of a raw stdout blob ('jello')": (2, "stdout", flip(1)),
    "a bit of a raw stderr blob": (2, "stderr", flip(-3)),
    "a bit of a compressed blob": (1, "stdout", flip(-100)),  # zstd decodes it, wrongly
    "a compressed blob's header": (1, "stdout", flip(39)),  # zstd then asks for 2**40 bytes
    "a bit of the runs map": (1, "runs", flip(9)),
    "a runs map of a bad length": (1, "runs", lambda v: v[:-1]),
    "a runs map removed": (2, "runs", lambda v: None),
    "a bit of the line times": (1, "line_times", flip(17)),  # still valid: wrong times
    "an offset": (1, "stdout_offset", lambda v: v + 1),
    "a size": (2, "stderr_size", lambda v: v - 1),
    "the timestamp": (1, "timestamp", lambda v: v + 3600),
    "the chunk index": (2, "chunk_index", lambda v: v + 5),
    "the checksum removed": (2, "checksum", lambda v: None),
}


def damaged(spool: Outspool, kind: str) -> tuple[str, int]:
    execution_id = stored(spool)
    index, name, change = DAMAGE[kind]
    tamper(spool, execution_id, index, name, change)
    return execution_id, index


#: Every library read of a finished execution's output, each as its callers use it.
READS: dict[str, Callable[[Outspool, str], object]] = {
    "read": lambda sp, i: sp.read(i),
    "range": lambda sp, i: sp.output(i, None, 0, 1 << 20),
    "tail": lambda sp, i: sp.tail(i, 10_000),
    "iter_output": lambda sp, i: list(sp.iter_output(i)),
    "pieces": lambda sp, i: sp.pieces(i, 0, 1 << 20),
    "line boundary": lambda sp, i: sp.line_boundary(i, len(ALL)),
    "follow": lambda sp, i: list(sp.follow(i)),
    "lines": lambda sp, i: list(sp.lines(i)),
    "grep": lambda sp, i: list(sp.search(i, re.compile("line"))),
}


def test_undamaged_output_reads_back_exactly(spool: Outspool) -> None:
    execution_id = stored(spool)
    assert spool.read(execution_id) == ALL
    assert b"".join(spool.iter_output(execution_id)) == ALL
    assert spool.tail(execution_id, 10_000).data == ALL


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_read_reports_damage_naming_the_chunk(spool: Outspool, kind: str) -> None:
    execution_id, index = damaged(spool, kind)
    shown = index + 5 if kind == "the chunk index" else index
    for name, read in READS.items():
        with pytest.raises(StoreError) as caught:
            got = read(spool, execution_id)
            pytest.fail(f"{name} returned {got!r:.200}")
        assert isinstance(caught.value, DamagedError), (name, caught.value)
        assert f"chunk {shown} of {execution_id}" in str(caught.value), (name, caught.value)
        assert "damaged" in str(caught.value)


@pytest.mark.parametrize(
    "args",
    [["logs"], ["logs", "-n", "10000"], ["logs", "--follow"], ["logs", "-t"], ["grep", "l"]],
    ids=" ".join,
)
def test_the_cli_says_so_in_one_line_and_exits_2(
    spool: Outspool, db_url: str, args: list[str]
) -> None:
    execution_id, index = damaged(spool, "a bit of a raw stdout blob ('jello')")
    found = run_cli(*args, "--db", db_url, execution_id)
    assert found.rc == 2, found
    assert found.err_lines == [
        f"outspool: chunk {index} of {execution_id} is damaged (its checksum does not match)"
    ]
    assert b"jello" not in found.stdout
    if args == ["logs"]:  # what came before the damaged chunk, exactly
        assert ALL.startswith(found.stdout)


@pytest.mark.parametrize(
    "path",
    [
        "/output",
        "/output?offset=20&timestamps=true",
        "/tail?lines=10000",
        "/pieces",
        "/pieces?lines=true&offset=5000",
        "/raw",
        "/raw?stream=stderr",
    ],
)
def test_the_api_answers_a_json_error_before_any_output(
    spool: Outspool, client: httpx.Client, path: str
) -> None:
    execution_id, index = damaged(spool, "a bit of a raw stderr blob")
    base, _, query = path.partition("?")
    answer = client.get(f"/api/executions/{execution_id}{base}", params=query or None)
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": f"chunk {index} of {execution_id} is damaged (its checksum does not match)"
    }


def test_a_search_answers_a_json_error(spool: Outspool, client: httpx.Client) -> None:
    execution_id, index = damaged(spool, "a bit of the runs map")
    answer = client.get("/api/search", params={"pattern": "line", "id": execution_id})
    assert answer.status_code == 500, answer.text
    assert f"chunk {index} of {execution_id} is damaged" in answer.json()["error"]


def test_the_live_stream_sends_a_problem_event_and_ends(
    spool: Outspool, client: httpx.Client
) -> None:
    execution_id, index = damaged(spool, "a runs map of a bad length")
    found = collect(client, f"/api/executions/{execution_id}/events")
    assert [e.kind for e in found if e.kind != "output"] == ["problem"]
    assert found[-1].data == {
        "error": f"chunk {index} of {execution_id} is damaged (its checksum does not match)"
    }
    assert ALL.startswith(output_of(found))


def test_a_download_damaged_past_its_checked_start_fails_instead_of_ending_short(
    spool: Outspool, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    size = RAW_CHECKED + (2 << 20)
    data = stored_big(spool, "big", size)
    last = size // BIG_CHUNK - 1
    tamper(spool, "big", last, "checksum", lambda v: v ^ 1)
    got = bytearray()
    with client.stream("GET", "/api/executions/big/raw") as answer:
        assert answer.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in answer.iter_bytes():
                got += piece
    assert data.startswith(got) and len(got) < size
    assert f"a download ended early: chunk {last} of big is damaged" in caplog.text


def downgrade_to_7(url: str) -> None:
    """Make the store at ``url`` what format 7 left: no checksum column (and no checksums),
    no capturing process identity (format 9), no index of end times (format 10)."""
    store = PostgresStore(url) if url.startswith("postgresql") else SqliteStore(url)
    with connection(store) as run:
        run("ALTER TABLE execution_output_chunks DROP COLUMN checksum", ())
        run("ALTER TABLE workers DROP COLUMN process", ())
        run("DROP INDEX executions_ended", ())
        run("UPDATE outspool_schema SET version = 7", ())


def test_an_older_store_gets_checksums_when_it_is_upgraded(db_url: str, settings: Settings) -> None:
    with Outspool(db_url, settings) as spool:
        execution_id = stored(spool)
        big = stored_big(spool, "big", 3 * BIG_CHUNK)  # SQLite: in a segment file
    downgrade_to_7(db_url)
    with Outspool(db_url, settings) as spool:
        assert spool.read(execution_id) == ALL
        assert spool.read("big") == big
        with connection(spool.store) as run:
            assert run("SELECT version FROM outspool_schema", ()) == [(SCHEMA_VERSION,)]
            unsealed = "SELECT count(*) FROM execution_output_chunks WHERE checksum IS NULL"
            assert run(unsealed, ()) == [(0,)]
        tamper(spool, execution_id, 2, "stdout", flip(1))
        tamper(spool, "big", 1, "stdout_offset", lambda v: v - 1)
        for damaged_id, index in ((execution_id, 2), ("big", 1)):
            with pytest.raises(DamagedError, match=f"chunk {index} of {damaged_id} is damaged"):
                spool.read(damaged_id)


def test_an_old_row_that_cannot_be_sealed_reads_as_damaged(
    db_path: Path, settings: Settings
) -> None:
    with Outspool(str(db_path), settings) as spool:
        execution_id = stored(spool)
        tamper(spool, execution_id, 1, "runs", lambda v: "text, not a runs map")
    downgrade_to_7(str(db_path))
    with Outspool(str(db_path), settings) as spool:
        assert spool.output(execution_id, None, 0, 11).data == b"first line\n"
        with pytest.raises(DamagedError, match=f"chunk 1 of {execution_id} is damaged"):
            spool.read(execution_id)


#: Prints 3,000 distinct lines (140 KiB), a hundred at a time.
LINES = r"""
import hashlib, sys
for i in range(3000):
    sys.stdout.write(f"{i:05d} {hashlib.sha256(str(i).encode()).hexdigest()[:40]}\n")
    if i % 100 == 99:
        sys.stdout.flush()
"""


def test_random_bit_flips_in_the_database_file_are_reported(db_path: Path) -> None:
    """The issue's case: 100 random bit flips in stored output passed integrity_check and
    ``logs`` printed wrong bytes with exit 0."""
    # reads of at most 16 KiB (reads are never cut) close chunks of at most 32 KiB: the
    # 141 KB of output fill more than 3 chunks however the capture keeps pace with it
    small_chunks = {
        "OUTSPOOL_COMPRESSION": "none",
        "OUTSPOOL_MAX_CHUNK_SIZE": "16384",
        "OUTSPOOL_READ_SIZE": "16384",
    }
    ran = run_cli("run", "--db", str(db_path), "--", sys.executable, "-c", LINES, env=small_chunks)
    assert ran.rc == 0, ran
    truth = ran.stdout
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("SELECT count(*) FROM execution_output_chunks").fetchone()[0] > 3
    image = bytearray(db_path.read_bytes())
    spots = [
        found + at
        for line in truth.splitlines(keepends=True)
        if (found := image.find(line)) >= 0
        for at in range(len(line))
    ]
    assert len(spots) > len(truth) // 2  # the output is in the file, as it was written
    rng = random.Random(14)
    for spot in rng.sample(spots, 100):
        image[spot] ^= 1 << rng.randrange(8)
    db_path.write_bytes(bytes(image))
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    logs = run_cli("logs", "--db", str(db_path), ran_id(db_path))
    assert logs.rc == 2, logs
    assert len(logs.err_lines) == 1 and "is damaged" in logs.err_lines[0], logs
    assert truth.startswith(logs.stdout)


def ran_id(db_path: Path) -> str:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        (execution_id,) = conn.execute("SELECT id FROM executions").fetchone()
    return str(execution_id)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("blob_crc", lambda v: v ^ 1),
        ("blob_offset", lambda v: v + 1),
        ("blob_stdout_length", lambda v: 1 << 40),  # once read as 1 TiB to allocate
        ("blob_offset", lambda v: -1),
        ("blob_stdout_length", lambda v: "a lot"),
    ],
)
def test_a_damaged_segment_placement_is_reported(
    db_path: Path, settings: Settings, name: str, change: Callable[[Any], Any]
) -> None:
    with Outspool(str(db_path), settings) as spool:
        stored_big(spool, "big", 3 * BIG_CHUNK)
        assert column(spool, "big", 1, "blob_offset") == BIG_CHUNK  # in the segment file
        tamper(spool, "big", 1, name, change)
        with pytest.raises(DamagedError, match="chunk 1 of big is damaged"):
            spool.read("big")


def test_a_bit_flipped_in_a_segment_file_is_reported(db_path: Path, settings: Settings) -> None:
    with Outspool(str(db_path), settings) as spool:
        stored_big(spool, "big", 3 * BIG_CHUNK)
    segment = db_path.with_name(db_path.name + "-chunks") / "big.seg"
    with segment.open("r+b") as file:
        file.seek(BIG_CHUNK + 12345)
        byte = file.read(1)[0]
        file.seek(BIG_CHUNK + 12345)
        file.write(bytes([byte ^ 0x10]))
    with Outspool(str(db_path), settings) as spool:
        assert spool.output("big", None, 0, BIG_CHUNK).data  # chunk 0 is whole
        with pytest.raises(DamagedError, match=r"chunk 1 of big is damaged: its bytes in .*fail"):
            spool.read("big")


@pytest.mark.parametrize("index", [0, 1, 2], ids=["the first", "one in the middle", "the last"])
def test_a_deleted_chunk_row_is_damage_not_a_gap(
    spool: Outspool, db_url: str, client: httpx.Client, index: int
) -> None:
    """Bytes missing where no output limit dropped any are chunk rows lost behind the
    store's back: every read says so, the CLI in one line (exit 2), the page's stream
    with a ``problem`` event; never a gap notice over wrong output."""
    execution_id = stored(spool)
    with connection(spool.store) as run:
        run(
            "DELETE FROM execution_output_chunks WHERE execution_id = %s AND chunk_index = %s",
            (execution_id, index),
        )
    for name, read in READS.items():
        with pytest.raises(DamagedError, match="are missing") as caught:
            got = read(spool, execution_id)
            pytest.fail(f"{name} returned {got!r:.200}")
        assert f"the output of {execution_id} is damaged" in str(caught.value), name
    found = run_cli("logs", "--db", db_url, execution_id)
    assert found.rc == 2, found
    assert len(found.err_lines) == 1 and "are missing" in found.err_lines[0], found.err_lines
    raw = client.get(f"/api/executions/{execution_id}/raw")
    assert raw.status_code == 500 and "are missing" in raw.json()["error"]
    events = collect(client, f"/api/executions/{execution_id}/events")
    assert [e.kind for e in events if e.kind != "output"] == ["problem"]
    assert "are missing" in events[-1].data["error"]


#: 300 numbered lines (about 9 KiB) of stdout, flushed 20 at a time, each naming the secret
#: in $TOKEN (empty when none is set), then one line of stderr.
NUMBERED = r"""
import os, sys
token = os.environ.get("TOKEN", "")
for i in range(300):
    sys.stdout.write(f"line {i:04d} {token} of a numbered output\n")
    if i % 20 == 19:
        sys.stdout.flush()
sys.stderr.write("done\n")
"""


def delete_newest_chunk(spool: Outspool, execution_id: str) -> int:
    """Delete the execution's newest chunk row behind the store's back; its index."""
    with connection(spool.store) as run:
        query = "SELECT max(chunk_index) FROM execution_output_chunks WHERE execution_id = %s"
        ((newest,),) = run(query, (execution_id,))
        run(
            "DELETE FROM execution_output_chunks WHERE execution_id = %s AND chunk_index = %s",
            (execution_id, newest),
        )
    return int(newest)


def whole_reads(spool: Outspool, execution_id: str) -> dict[str, Callable[[], object]]:
    """The reads of :data:`READS` that reach an output's end, for any output (a range that
    starts before a gap stops there: this one starts 100 bytes before the end)."""
    size = spool.get(execution_id).stdout_size + spool.get(execution_id).stderr_size
    reads: dict[str, Callable[[], object]] = {
        name: partial(read, spool, execution_id) for name, read in READS.items()
    }
    reads["range"] = partial(spool.output, execution_id, None, size - 100, 1 << 20)
    reads["line boundary"] = partial(spool.line_boundary, execution_id, size)
    return reads


@pytest.mark.parametrize("how", ["an output limit", "masked secrets"])
def test_a_deleted_last_chunk_is_damage_also_after_a_limit_or_masking(
    spool: Outspool, db_url: str, how: str
) -> None:
    """The newest chunk of an ended execution ends where its row says each stream ends,
    also when a limit dropped bytes between head and tail or masking made the stored output
    shorter than what the program wrote: such an output reads whole, and once its newest
    chunk row is deleted every read reports damage, the CLI in one line (exit 2)."""
    options: dict[str, Any] = (
        {"max_output": 2000}
        if how == "an output limit"
        else {"secrets": {"TOKEN": "hunter2-but-longer"}}
    )
    ex = spool.run([sys.executable, "-c", NUMBERED], **options)
    assert ex.status.value == "succeeded"
    if how == "an output limit":
        assert ex.stdout_dropped > 0
    else:
        assert b"[MASKED]" in spool.read(ex.id) and b"hunter2" not in spool.read(ex.id)
    for read in whole_reads(spool, ex.id).values():
        read()  # whole: no false alarm
    assert spool.tail(ex.id, 1).data == b"done\n"
    delete_newest_chunk(spool, ex.id)
    for name, read in whole_reads(spool, ex.id).items():
        with pytest.raises(DamagedError, match=r"the last \d+ bytes of std\w+ are missing"):
            got = read()
            pytest.fail(f"{name} returned {got!r:.200}")
    found = run_cli("logs", "--db", db_url, ex.id)
    assert found.rc == 2, found
    assert len(found.err_lines) == 1 and "are missing" in found.err_lines[0], found.err_lines


def test_a_lost_execution_reads_to_what_was_committed_and_no_further(spool: Outspool) -> None:
    """A ``lost`` execution's row counts the bytes committed before its capture died: they
    read whole; without its newest chunk row, they are damaged."""
    execution_id = stored(spool, "lost-one", finished=False)
    assert spool.store.mark_lost(execution_id, time.time(), "test: its capture died")
    assert spool.get(execution_id).status.value == "lost"
    for read in whole_reads(spool, execution_id).values():
        read()
    assert spool.read(execution_id) == ALL
    assert delete_newest_chunk(spool, execution_id) == len(CHUNKS) - 1
    for name, read in whole_reads(spool, execution_id).items():
        with pytest.raises(DamagedError, match="the last 6 bytes of stdout are missing"):
            got = read()
            pytest.fail(f"{name} returned {got!r:.200}")
