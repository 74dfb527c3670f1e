"""A program's start, its output and its end ride the writer's group commits (issue 13).

The writer is given delays no test waits out (an hour), so nothing becomes due by time:
only an end makes the writer commit, and what it commits then is exactly what was asked.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from outspool.codec import decode
from outspool.jobs import Job
from outspool.models import Outcome, Status, Stream
from outspool.settings import Settings
from outspool.store import Store, open_store
from outspool.writer import KEPT_INLINE, Writer
from tests.helpers import wait_until

PATIENT = Settings.load(flush_interval=3600, idle_flush_delay=3600)


def _run_one(store: Store, execution_id: str, out: bytes, err: bytes) -> Writer:
    """Start, write and end one execution through a writer; the writer, closed."""
    store.create(Job(command=("prog",)), execution_id, 1.0, Status.QUEUED)
    writer = Writer(store, PATIENT).start()
    try:
        sink = writer.open(execution_id)
        sink.started(4242, 5.0, "w1")
        for stream, data in ((Stream.STDOUT, out), (Stream.STDERR, err)):
            if data:
                sink.write(stream, data, sink.reserve(len(data)))
        sink.finish(Outcome(Status.SUCCEEDED, 0))
    finally:
        writer.close()
    return writer


def _inline(db: Path, execution_id: str) -> tuple[bytes | None, bytes | None, int]:
    conn = sqlite3.connect(db)
    try:
        query = "SELECT stdout, stderr, output_truncated FROM executions WHERE id = ?"
        row = conn.execute(query, (execution_id,)).fetchone()
    finally:
        conn.close()
    return row[0], row[1], row[2]


def test_start_output_and_end_are_one_transaction(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    store = open_store(str(db), PATIENT)
    try:
        writer = _run_one(store, "e", b"hi\x00\xff\n", b"err\n")
        got = store.get("e")
    finally:
        store.close()
    assert writer.stats.transactions == 1  # before: three (running, output, end)
    assert (got.status, got.pid, got.started_at, got.worker_id) == (
        Status.SUCCEEDED,
        4242,
        5.0,
        "w1",
    )
    assert (got.stdout_size, got.stderr_size) == (5, 4)
    assert _inline(db, "e") == (b"hi\x00\xff\n", b"err\n", 0)


def test_output_past_what_is_kept_in_memory_still_gets_its_inline_copy(tmp_path: Path) -> None:
    db = tmp_path / "large.db"
    out = bytes(range(256)) * (KEPT_INLINE // 256 + 3)  # over the memory copy, under 1 MiB
    store = open_store(str(db), PATIENT)
    try:
        _run_one(store, "e", out, b"e")
        got = store.get("e")
    finally:
        store.close()
    assert (got.status, got.stdout_size, got.output_truncated) == (
        Status.SUCCEEDED,
        len(out),
        False,
    )
    assert _inline(db, "e") == (out, b"e", 0)


def test_many_live_executions_each_commit_takes_only_those_with_new_output(
    db_url: str,
) -> None:
    """300 executions open at once, a few of them printing between two commits (as a
    thousand programs printing every 100 ms look to the writer): every line is stored,
    in order, and each commit writes chunks only for the executions that printed."""
    settings = Settings.load(idle_flush_delay=0.0)
    store = open_store(db_url, settings)
    try:
        ids = [f"e{i:03}" for i in range(300)]
        for execution_id in ids:
            store.create(Job(command=("prog",)), execution_id, 1.0, Status.QUEUED)
        writer = Writer(store, settings).start()
        try:
            sinks = [writer.open(execution_id) for execution_id in ids]
            expected = {execution_id: bytearray() for execution_id in ids}
            for n in range(40):
                for sink in sinks[n * 7 % 300 :][:11]:  # 11 of them, a moving window
                    line = f"{sink.execution_id} line {n}\n".encode()
                    stream = Stream.STDERR if n % 5 == 0 else Stream.STDOUT
                    sink.write(stream, line, sink.reserve(len(line)))
                    expected[sink.execution_id] += line
                wait_until(lambda: writer.pending_bytes == 0, message="the round committed")
            chunks_before_end = writer.stats.chunks
            for sink in sinks:
                sink.finish(Outcome(Status.SUCCEEDED, 0))
        finally:
            writer.close()
        assert chunks_before_end == 40 * 11  # one per execution that printed, per commit
        for execution_id in ids:
            records = store.chunks_after(execution_id, -1, 1 << 20)
            got = b"".join(decode(record).data(None) for record in records)
            assert got == bytes(expected[execution_id]), execution_id
    finally:
        store.close()
