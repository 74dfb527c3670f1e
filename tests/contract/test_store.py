"""The Store protocol, in storage terms, against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from outspool.client import Outspool
from outspool.codec import RAW, ZSTD, ChunkRecord, Encoder, decode
from outspool.errors import NotFoundError, StoreError
from outspool.jobs import Job
from outspool.models import Outcome, Status, Stream
from outspool.progress import Progress
from outspool.settings import Settings
from outspool.store import OutputUpdate, Store, WriteBatch, open_store
from outspool.store.base import Ended, Started
from outspool.store.core import SqlStore
from tests.contract.conftest import OpenStore, store_url

OUT, ERR = Stream.STDOUT, Stream.STDERR


def new(**fields: object) -> Job:
    return Job(command=("prog", "arg with space", "ü"), **fields)  # type: ignore[arg-type]


def raw_chunk(
    execution_id: str, index: int, offsets: tuple[int, int], out: bytes, err: bytes
) -> ChunkRecord:
    """A chunk stored uncompressed, so its blobs are exactly the bytes given."""
    segments = [(s, d) for s, d in ((OUT, out), (ERR, err)) if d]
    return Encoder("none").encode(execution_id, index, offsets, segments, 1000.0 + index)


def write_chunks(store: Store, execution_id: str, pieces: list[tuple[bytes, bytes]]) -> None:
    """Append ``(stdout, stderr)`` pieces as chunks 0.. with their running totals."""
    chunks, out_off, err_off = [], 0, 0
    for index, (out, err) in enumerate(pieces):
        chunks.append(raw_chunk(execution_id, index, (out_off, err_off), out, err))
        out_off += len(out)
        err_off += len(err)
    update = OutputUpdate(execution_id, out_off, err_off, len(pieces), 2000.0)
    store.write(WriteBatch(chunks, [update]))


def test_migrate_is_idempotent(store: Store, open_another: OpenStore) -> None:
    store.create(new(), "id-1", 1.0)
    again = open_another()
    assert isinstance(again, SqlStore)
    again.migrate()
    assert again.get("id-1").command == ("prog", "arg with space", "ü")


def test_create_and_get_keep_every_field(store: Store) -> None:
    created = store.create(
        new(
            name="nightly",
            language="python",
            code="print(1)",
            cwd="/somewhere",
            env={"A": "1", "B": "two words"},
            timeout=2.5,
            pty=True,
        ),
        "01abc",
        1234.5,
    )
    got = store.get("01abc")
    assert got == created
    assert got.id == "01abc"
    assert got.status is Status.RUNNING
    assert (got.name, got.language, got.code, got.cwd) == (
        "nightly",
        "python",
        "print(1)",
        "/somewhere",
    )
    assert dict(got.env) == {"A": "1", "B": "two words"}
    assert (got.timeout, got.pty, got.created_at) == (2.5, True, 1234.5)
    assert (got.stdout_size, got.stderr_size, got.chunk_count) == (0, 0, 0)
    assert (got.exit_code, got.finished_at, got.progress) == (None, None, None)


def test_get_by_unique_prefix(store: Store) -> None:
    store.create(new(), "abc111", 1.0)
    store.create(new(), "abc222", 2.0)
    assert store.get("abc1").id == "abc111"
    with pytest.raises(NotFoundError):
        store.get("abc")  # ambiguous
    with pytest.raises(NotFoundError, match="zzz"):
        store.get("zzz")


def test_mark_running(store: Store) -> None:
    store.create(new(), "e", 1.0, Status.QUEUED)
    store.mark_running("e", 4242, 5.0, None)
    got = store.get("e")
    assert (got.status, got.pid, got.started_at) == (Status.RUNNING, 4242, 5.0)


def test_chunks_round_trip_exact_bytes_in_order(store: Store) -> None:
    store.create(new(), "e", 1.0)
    pieces = [(b"\x00\xff\xfe", b""), (b"", b"err\r\n"), (b"caf\xc3", b"\xa9")]
    write_chunks(store, "e", pieces)
    records = store.chunks_after("e", -1, 100)
    assert [r.chunk_index for r in records] == [0, 1, 2]
    assert [(decode(r).stdout, decode(r).stderr) for r in records] == pieces
    assert all(r.codec == RAW for r in records)
    assert records[2].stdout == b"caf\xc3"  # blobs come back as stored
    got = store.get("e")
    assert (got.stdout_size, got.stderr_size, got.chunk_count) == (7, 6, 3)
    assert got.last_output_at == 2000.0


def test_chunks_after_and_before_page(store: Store) -> None:
    store.create(new(), "e", 1.0)
    store.create(new(), "other", 2.0)
    write_chunks(store, "e", [(b"%d" % i, b"") for i in range(10)])
    write_chunks(store, "other", [(b"x", b"y")])
    assert [r.chunk_index for r in store.chunks_after("e", 3, 4)] == [4, 5, 6, 7]
    assert [r.chunk_index for r in store.chunks_after("e", 9, 4)] == []
    assert [r.chunk_index for r in store.chunks_before("e", 5, 3)] == [4, 3, 2]
    assert [r.chunk_index for r in store.chunks_before("e", 1 << 62, 2)] == [9, 8]
    assert {r.execution_id for r in store.chunks_after("e", -1, 100)} == {"e"}


def test_chunk_containing(store: Store) -> None:
    store.create(new(), "e", 1.0)
    # stdout: chunk0 [0,3)  chunk2 [3,5);  stderr: chunk1 [0,4) chunk2 [4,6)
    write_chunks(store, "e", [(b"abc", b""), (b"", b"1234"), (b"de", b"56")])
    assert [store.chunk_containing("e", OUT, o) for o in (0, 2, 3, 4)] == [0, 0, 2, 2]
    assert [store.chunk_containing("e", ERR, o) for o in (0, 3, 4, 5)] == [1, 1, 2, 2]
    # all: chunk0 [0,3) chunk1 [3,7) chunk2 [7,11)
    assert [store.chunk_containing("e", None, o) for o in (0, 2, 3, 6, 7, 10)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert store.chunk_containing("nothing", None, 0) is None


def test_offsets_before_a_time(store: Store) -> None:
    store.create(new(), "e", 1.0)
    write_chunks(store, "e", [(b"abc", b""), (b"", b"1234"), (b"de", b"56")])  # read at 1000..
    assert store.offsets_before("e", 1000.0) is None
    assert store.offsets_before("e", 1000.5) == (0, 0)
    assert store.offsets_before("e", 1001.0) == (0, 0)
    assert store.offsets_before("e", 1001.001) == (3, 0)
    assert store.offsets_before("e", 1e12) == (3, 4)
    assert store.offsets_before("nothing", 1e12) is None


def test_progress_is_recorded_and_kept(store: Store) -> None:
    store.create(new(), "e", 1.0)
    store.write(WriteBatch([], [OutputUpdate("e", 0, 0, 0, 3.0, Progress(" 42%|####", 42.0))]))
    store.write(WriteBatch([], [OutputUpdate("e", 5, 0, 0, 4.0, None)]))
    got = store.get("e")
    assert (got.progress, got.progress_percent) == (" 42%|####", 42.0)
    assert (got.stdout_size, got.last_output_at) == (5, 4.0)


def test_finish_records_the_outcome_once(store: Store) -> None:
    store.create(new(), "e", 1.0)
    store.mark_running("e", 1, 2.0, None)
    outcome = Outcome(Status.FAILED, None, 9, "killed by SIGKILL")
    assert store.finish("e", outcome, 3.0, (b"out", b"err")) is True
    assert store.finish("e", Outcome(Status.SUCCEEDED, 0), 4.0, None) is False
    got = store.get("e")
    assert (got.status, got.exit_code, got.signal, got.reason) == (
        Status.FAILED,
        None,
        9,
        "killed by SIGKILL",
    )
    assert got.finished_at == 3.0
    assert got.output_truncated is False


def test_finish_without_inline_output_is_truncated(store: Store) -> None:
    store.create(new(), "e", 1.0)
    assert store.finish("e", Outcome(Status.SUCCEEDED, 0), 3.0, None)
    got = store.get("e")
    assert got.output_truncated is True
    assert got.exit_code == 0


def test_list_newest_first_with_filter_limit_and_pages(store: Store) -> None:
    for i in range(7):
        store.create(new(), f"id{i}", 100.0 + i)
    store.finish("id2", Outcome(Status.SUCCEEDED, 0), 200.0, None)
    store.finish("id5", Outcome(Status.SUCCEEDED, 0), 200.0, None)
    assert [e.id for e in store.list_executions()] == [f"id{i}" for i in range(6, -1, -1)]
    assert [e.id for e in store.list_executions(limit=2)] == ["id6", "id5"]
    assert [e.id for e in store.list_executions(limit=3, before="id5")] == ["id4", "id3", "id2"]
    assert [e.id for e in store.list_executions(Status.SUCCEEDED)] == ["id5", "id2"]
    assert [e.id for e in store.list_executions(Status.TIMED_OUT)] == []


def test_wait_returns_when_another_connection_commits(
    store: Store, open_another: OpenStore
) -> None:
    """A follower's wait wakes on a commit from elsewhere (no 60 s timeout reached)."""
    store.create(new(), "e", 1.0)
    other = open_another()
    stop = threading.Event()
    commits = 0

    def keep_committing() -> None:
        nonlocal commits
        while not stop.is_set():
            commits += 1
            other.write(WriteBatch([], [OutputUpdate("e", commits, 0, 0, float(commits))]))

    thread = threading.Thread(target=keep_committing)
    thread.start()
    try:
        store.wait("e", 60.0)
    finally:
        stop.set()
        thread.join()
    assert store.get("e").stdout_size >= 1


def test_a_commit_calls_the_subscribers_of_its_execution_only(
    store: Store, open_another: OpenStore
) -> None:
    """A server following 100 executions is poked for the one that changed, not for all."""
    for key in "ab":
        store.create(new(), key, 1.0)
    watcher = open_another()
    calls = {"a": 0, "b": 0}
    called = {"a": threading.Event(), "b": threading.Event()}

    def subscriber(key: str) -> Callable[[], None]:
        def changed() -> None:
            calls[key] += 1
            called[key].set()

        return changed

    cancel = {key: watcher.subscribe(key, subscriber(key)) for key in "ab"}
    size = 0

    def commit(*keys: str) -> None:
        nonlocal size
        size += 1
        store.write(WriteBatch([], [OutputUpdate(k, size, 0, 0, float(size)) for k in keys]))

    commit("b")
    assert called["b"].wait(60)  # (or a first, spurious call: both are past now)
    called["b"].clear()
    calls["a"] = 0
    commit("b")
    assert called["b"].wait(60)
    assert calls["a"] == 0
    cancel["b"]()
    calls["b"] = 0
    commit("a", "b")
    assert called["a"].wait(60)
    cancel["a"]()
    assert calls["b"] == 0


def test_readers_see_committed_writes_of_another_connection(
    store: Store, open_another: OpenStore
) -> None:
    reader = open_another()
    store.create(new(), "e", 1.0)
    write_chunks(store, "e", [(b"hello", b"")])
    assert decode(reader.chunks_after("e", -1, 10)[0]).stdout == b"hello"
    assert reader.get("e").stdout_size == 5


def test_opening_without_create_refuses_a_missing_store_and_creates_nothing(
    backend: str, tmp_path: Path
) -> None:
    """``create=False``: one clear StoreError; then a normal open still starts from scratch."""
    with store_url(backend, tmp_path) as url:
        with pytest.raises(StoreError, match=r"^no database at "):
            open_store(url, Settings.load(), create=False)
        assert list(tmp_path.iterdir()) == []
        created = open_store(url, Settings.load())
        try:
            created.create(new(), "e", 1.0)
        finally:
            created.close()
        reader = open_store(url, Settings.load(), create=False)
        try:
            assert reader.get("e").id == "e"
        finally:
            reader.close()


def test_one_write_records_the_start_the_output_and_the_end(store: Store) -> None:
    store.create(new(), "e", 1.0, Status.QUEUED)
    chunk = raw_chunk("e", 0, (0, 0), b"out", b"err")
    end = Ended("e", Outcome(Status.FAILED, 3, None, "exited with code 3"), 7.0, (b"out", b"err"))
    store.write(
        WriteBatch(
            [chunk],
            [OutputUpdate("e", 3, 3, 1, 6.0)],
            started=[Started("e", 4242, 5.0, None)],
            ended=[end],
        )
    )
    got = store.get("e")
    assert (got.status, got.exit_code, got.reason, got.pid, got.started_at) == (
        Status.FAILED,
        3,
        "exited with code 3",
        4242,
        5.0,
    )
    assert (got.finished_at, got.stdout_size, got.output_truncated) == (7.0, 3, False)
    assert [(decode(r).stdout, decode(r).stderr) for r in store.chunks_after("e", -1, 9)] == [
        (b"out", b"err")
    ]


def test_a_write_that_fails_records_neither_start_nor_end(store: Store) -> None:
    store.create(new(), "e", 1.0, Status.QUEUED)
    orphan = raw_chunk("no-such-execution", 0, (0, 0), b"x", b"")  # refused: no such row
    with pytest.raises(StoreError):
        store.write(
            WriteBatch(
                [orphan],
                [],
                started=[Started("e", 4242, 5.0, None)],
                ended=[Ended("e", Outcome(Status.SUCCEEDED, 0), 7.0, None)],
            )
        )
    got = store.get("e")
    assert (got.status, got.pid, got.finished_at) == (Status.QUEUED, None, None)


#: 400 KB of base64 text: level 1 shrinks it (Huffman), the fast negative levels leave it.
BASE64 = "import base64, os, sys; sys.stdout.write(base64.b64encode(os.urandom(300_000)).decode())"


@pytest.mark.parametrize("level", [None, 1, -1])
def test_chunks_are_stored_at_the_backends_own_level_unless_one_is_set(
    backend: str, url: str, level: int | None
) -> None:
    own = {"sqlite": RAW, "postgres": ZSTD}[backend]  # -1 on SQLite, 1 on PostgreSQL
    expected = own if level is None else {1: ZSTD, -1: RAW}[level]
    with Outspool(url, Settings.load(compression_level=level)) as spool:
        ex = spool.run([sys.executable, "-c", BASE64])
        records = spool.store.chunks_after(ex.id, -1, 1000)
        assert records
        assert {r.codec for r in records} == {expected}
        assert len(spool.read(ex.id)) == 400_000
