"""Delete and prune on both backends: what goes, what stays, and that the space comes back."""

from __future__ import annotations

import contextlib
import math
import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status, Stream
from outspool.codec import Encoder
from outspool.errors import InvalidStateError, NotFoundError
from outspool.jobs import Job
from outspool.models import Outcome
from outspool.prune import Rules, prune
from outspool.store import SCHEMA_VERSION, open_store, queries
from outspool.store.base import OutputUpdate, Store, WriteBatch
from outspool.store.postgres import PostgresStore
from outspool.worker import Worker
from tests.conftest import SpawnCli
from tests.faults.damage import connection
from tests.helpers import wait_until

BULK = "import os\nfor i in range({n}): os.write(1, os.urandom(100_000))\n"  # incompressible


def finished(store: Store) -> list[str]:
    """Every finished execution's ID, oldest end first."""
    return [
        f.execution_id for f in store.prunable((-math.inf, ""), (math.inf, ""), [], None, 10**6)
    ]


def run(spool: Outspool, code: str) -> str:
    return spool.run([sys.executable, "-c", code]).id


def files_of(url: str, execution_id: str) -> list[Path]:
    if "://" in url:
        return []
    return sorted(Path(url + "-chunks").glob(f"{execution_id}*"))


def test_delete_removes_the_execution_and_its_output(spool: Outspool, url: str) -> None:
    big = run(spool, BULK.format(n=40))
    small = run(spool, "print('stay')")
    if "://" not in url:
        assert files_of(url, big)  # large chunks live in segment files
    assert spool.delete(big[:10]) == big
    with pytest.raises(NotFoundError):
        spool.get(big)
    assert spool.store.chunks_after(big, -1, 10) == []
    assert files_of(url, big) == []
    assert spool.read(small) == b"stay\n"
    with pytest.raises(NotFoundError):
        spool.delete(big)


def test_a_running_execution_is_refused_unless_forced(spool: Outspool) -> None:
    running = spool.start(["sleep", "60"])
    wait_until(lambda: spool.get(running.id).pid is not None, message="started")
    with pytest.raises(InvalidStateError, match="running"):
        spool.delete(running.id)
    assert spool.get(running.id).status is Status.RUNNING
    spool.delete(running.id, force=True)
    with pytest.raises(NotFoundError):
        spool.get(running.id)
    queued = spool.submit(["true"])
    with pytest.raises(InvalidStateError, match="queued"):
        spool.delete(queued.id)
    spool.delete(queued.id, force=True)
    with pytest.raises(NotFoundError):
        spool.get(queued.id)


def test_prune_rules_and_running_executions_survive(spool: Outspool) -> None:
    ids = [run(spool, f"print({i})") for i in range(5)]
    failed = run(spool, "import sys; sys.exit(3)")
    running = spool.start(["sleep", "60"])
    queued = spool.submit(["true"])
    wait_until(lambda: spool.get(running.id).pid is not None, message="started")

    dry = spool.prune(keep_last=2, dry_run=True)
    assert (dry.count, dry.dry_run) == (4, True)
    assert len(spool.list(limit=100)) == 8

    only_failed = spool.prune(statuses=[Status.FAILED])
    assert only_failed.ids == [failed]

    done = spool.prune(keep_last=2)
    assert sorted(done.ids) == sorted(ids[:3])
    assert done.bytes == 6  # "0\n" "1\n" "2\n"
    assert spool.prune(older_than=0).count == 2
    left = {ex.id for ex in spool.list(limit=100)}
    assert left == {running.id, queued.id}  # never pruned
    running.cancel()
    running.wait()


def test_prune_to_a_size_takes_the_oldest_first(spool: Outspool) -> None:
    ids = [run(spool, f"print('x' * {999 + i})") for i in range(4)]
    done = spool.prune(max_size=2500)
    assert done.ids == ids[:2]
    assert spool.store.stored_output() <= 2500


def finished_at(
    store: Store, execution_id: str, ended: float, kept: int, status: Status = Status.SUCCEEDED
) -> None:
    """A finished execution that ended at ``ended`` and keeps ``kept`` bytes of output."""
    store.create(Job(command=("true",)), execution_id, ended - 1, Status.RUNNING, None)
    if kept:
        chunk = Encoder().encode(execution_id, 0, (0, 0), [(Stream.STDOUT, b"x" * kept)], 0)
        store.write(WriteBatch([chunk], [OutputUpdate(execution_id, kept, 0, 1, ended)]))
    store.finish(execution_id, Outcome(status, 0 if status is Status.SUCCEEDED else 1), ended, None)


Ended = dict[str, tuple[float, Status, int]]  # when each finished, how, and the bytes it keeps


def oracle(store: Store, ended: Ended, rules: Rules, now: float) -> list[str]:
    """What the rules say, read plainly over every finished execution (oldest end first)."""
    if rules.empty:
        return []
    newest_first = sorted(ended, key=lambda i: (ended[i][0], i), reverse=True)
    chosen = [
        i
        for rank, i in enumerate(newest_first)
        if (rules.keep_last is None or rank >= rules.keep_last)
        and (rules.older_than is None or ended[i][0] <= now - rules.older_than)
        and (not rules.statuses or ended[i][1] in rules.statuses)
    ][::-1]
    if rules.max_size is None:
        return chosen
    excess = store.stored_output() - rules.max_size
    taken: list[str] = []
    for i in chosen:
        if excess <= 0:
            break
        taken.append(i)
        excess -= ended[i][2]
    return taken


def test_the_database_chooses_like_the_rules(store: Store) -> None:
    now = 1000.0
    for i in range(6):  # e0 ended now, e5 50 s ago; every other one failed
        finished_at(store, f"e{i}", now - 10 * i, 100, Status.SUCCEEDED if i % 2 else Status.FAILED)
    store.create(Job(command=("true",)), "running", now - 100, Status.RUNNING, None)
    chunk = Encoder().encode("running", 0, (0, 0), [(Stream.STDOUT, b"r" * 300)], 0)
    store.write(WriteBatch([chunk], [OutputUpdate("running", 300, 0, 1, now)]))

    def pick(rules: Rules) -> list[str]:
        return prune(store, rules, dry_run=True, now=now).ids

    assert pick(Rules()) == []
    assert pick(Rules(older_than=25)) == ["e5", "e4", "e3"]
    assert pick(Rules(older_than=20)) == ["e5", "e4", "e3", "e2"]  # ended exactly 20 s ago
    assert pick(Rules(keep_last=4)) == ["e5", "e4"]
    assert pick(Rules(keep_last=6)) == []
    assert pick(Rules(keep_last=0)) == ["e5", "e4", "e3", "e2", "e1", "e0"]
    assert pick(Rules(statuses=frozenset({Status.FAILED}))) == ["e4", "e2", "e0"]
    assert pick(Rules(max_size=650)) == ["e5", "e4", "e3"]  # 900 stored, the running 300
    assert pick(Rules(max_size=1000)) == []
    assert pick(Rules(older_than=15, keep_last=3, max_size=750)) == ["e5", "e4"]


@pytest.mark.parametrize("batch", [1, 3, 200])
def test_batches_choose_what_the_rules_say(
    store: Store, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random stores (end times tied on purpose), random rules, against the plain reading."""
    monkeypatch.setattr("outspool.prune.MAX_BATCH", batch)
    rng = random.Random(batch)
    now = 10_000.0
    ended: Ended = {}
    for n in range(40):
        execution_id = f"{rng.randrange(1 << 32):08x}{n:02d}"
        when = now - rng.choice([0, 5, 5, 10, 30, 60, 60, 61])
        status = rng.choice([Status.SUCCEEDED, Status.FAILED, Status.CANCELLED])
        kept = rng.choice([0, 10, 100, 1000])
        finished_at(store, execution_id, when, kept, status)
        ended[execution_id] = (when, status, kept)
    for _ in range(60):
        rules = Rules(
            older_than=rng.choice([None, 0, 5, 10, 59, 60, 100]),
            keep_last=rng.choice([None, 0, 1, 7, 39, 40, 41]),
            max_size=rng.choice([None, 0, 500, 5000, 50_000]),
            statuses=frozenset(rng.sample([Status.FAILED, Status.CANCELLED], rng.randrange(3))),
        )
        assert prune(store, rules, dry_run=True, now=now).ids == oracle(store, ended, rules, now), (
            rules
        )


#: A batch of prune_batch: ended between 10 and 20 (ids "a" and "b" at the ends).
BATCH_PARAMS: dict[str, object] = {
    "after_ended": 10.0,
    "after_id": "a",
    "upto_ended": 20.0,
    "upto_id": "b",
    "limit": 20,
}


@pytest.mark.parametrize("statuses", [None, '["failed"]'])
@pytest.mark.parametrize("excess", [None, 1000])
def test_sqlite_prune_reads_only_its_range_of_the_end_time_index(
    tmp_path: Path, statuses: str | None, excess: int | None
) -> None:
    """A prune seeks the finished executions' end-time index between two bounds: it never
    scans the table, so its cost is its victims, not the store."""
    db = tmp_path / "plan.db"
    open_store(str(db), Settings.load()).close()
    sql = queries.load("sqlite")
    params = BATCH_PARAMS | {"statuses": statuses, "excess": excess}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        steps = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql["prune_batch"], params)]
        keep = [
            r[3]
            for r in conn.execute("EXPLAIN QUERY PLAN " + sql["prune_keep_from"], {"offset": 9})
        ]
    search = "SEARCH executions USING INDEX executions_ended (<expr>>? AND <expr><?)"
    assert search in steps, steps
    assert not any(step.startswith("SCAN executions") for step in steps), steps
    assert keep == ["SCAN executions USING INDEX executions_ended"], keep  # newest first: N rows


def test_postgres_prune_can_seek_the_end_time_index(backend: str, store: Store) -> None:
    """The same on PostgreSQL: the plan can use the index (seq scans off: on a tiny table the
    planner would rather read it all)."""
    if backend != "postgres":
        pytest.skip("PostgreSQL only")
    assert isinstance(store, PostgresStore)
    sql = queries.load("postgres")
    params = BATCH_PARAMS | {"statuses": '["failed"]', "excess": 1000}
    with contextlib.closing(store.connect()) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = [
            next(iter(r.values())) for r in conn.execute("EXPLAIN " + sql["prune_batch"], params)
        ]
    assert any("executions_ended" in line for line in plan), plan


def test_a_format_9_store_gets_the_end_time_index(url: str) -> None:
    """Format 10 adds the index prune chooses by; a store of format 9 is upgraded on open
    and prunes as before."""
    with Outspool(url) as spool:
        ids = [run(spool, f"print({i})") for i in range(3)]
        with connection(spool.store) as sql:
            sql("DROP INDEX executions_ended", ())
            sql("UPDATE outspool_schema SET version = 9", ())
    with Outspool(url) as spool:
        with connection(spool.store) as sql:
            assert sql("SELECT version FROM outspool_schema", ()) == [(SCHEMA_VERSION,)]
        assert spool.prune(keep_last=1, dry_run=True).ids == ids[:2]
        assert spool.prune(older_than=0).ids == ids


def test_sqlite_gives_the_space_back(tmp_path: Path) -> None:
    db = tmp_path / "space.db"
    settings = Settings.load(max_chunk_size=4096, read_size=4096)  # chunks stay inline
    trickle = "import os\nfor i in range(3000): print(os.urandom(500).hex(), flush=True)\n"

    def pages() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("PRAGMA page_count").fetchone()[0])

    with Outspool(str(db), settings) as spool:
        ids = [spool.run([sys.executable, "-c", trickle]).id for _ in range(2)]
        before = pages()
        assert sorted(spool.prune(older_than=0).ids) == sorted(ids)
        after = pages()
    assert after < before / 4, (before, after)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
    assert db.stat().st_size <= after * 8192  # checkpointed on close: the file shrank too


def test_an_old_sqlite_file_becomes_incremental(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    sql = queries.load("sqlite")
    with sqlite3.connect(db) as conn:
        conn.executescript(sql["schema_version_table"])
        conn.executescript(sql["migrate_1"])
        conn.execute("INSERT INTO outspool_schema (version) VALUES (1)")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    store = open_store(str(db), Settings.load())
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)


def test_a_trimmed_tail_and_a_deleted_execution_leave_no_files(tmp_path: Path) -> None:
    db = tmp_path / "files.db"
    with Outspool(str(db), Settings.load(max_output=256 * 1024)) as spool:
        ex = spool.run([sys.executable, "-c", BULK.format(n=100)])
        assert ex.stdout_dropped == ex.stdout_size - 256 * 1024
        names = sorted(p.name for p in (tmp_path / "files.db-chunks").iterdir())
        assert names  # the head's segment and the tail's own files
        assert len(names) <= 4
        assert len(spool.read(ex.id, Stream.STDOUT)) == 256 * 1024
        spool.delete(ex.id)
        assert list((tmp_path / "files.db-chunks").iterdir()) == []


def test_a_worker_applies_retention(url: str) -> None:
    settings = Settings.load(retention_keep_last=1, kill_grace=0.5)
    with Outspool(url, settings) as spool:
        ids = [run(spool, f"print({i})") for i in range(3)]
        Worker(url, settings, burst=True).run()
        assert [ex.id for ex in spool.list()] == [ids[-1]]


def test_a_prune_killed_midway_leaves_each_execution_whole_or_gone(
    url: str, spawn_cli: SpawnCli
) -> None:
    store = open_store(url, Settings.load())
    encoder = Encoder()
    ids = []
    for n in range(300):
        job = Job(command=("true",))
        ex = store.create(job, f"{n:016d}", time.time() - 100, Status.RUNNING, None)
        pieces = [
            encoder.encode(ex.id, i, (i * 4, 0), [(Stream.STDOUT, b"abc\n")], 0) for i in range(3)
        ]
        store.write(WriteBatch(pieces, [OutputUpdate(ex.id, 12, 0, 3, time.time())]))
        store.finish(ex.id, Outcome(Status.SUCCEEDED, 0), time.time(), None)
        ids.append(ex.id)
    pruning = spawn_cli("prune", "--db", url, "--older-than", "0s")
    wait_until(lambda: len(finished(store)) < 295 or pruning.poll() is not None, message="pruning")
    pruning.kill()
    pruning.wait()
    left = finished(store)
    assert 0 <= len(left) < 300
    for execution_id in left:
        records = store.chunks_after(execution_id, -1, 10)
        assert [r.chunk_index for r in records] == [0, 1, 2]
        assert store.get(execution_id).chunk_count == 3
    for gone in set(ids) - set(left):
        assert store.chunks_after(gone, -1, 10) == []
    store.close()


def test_files_a_crash_left_behind_are_swept(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    folder = tmp_path / "crash.db-chunks"
    with Outspool(str(db)) as spool:
        gone = run(spool, BULK.format(n=10))
        kept = run(spool, BULK.format(n=10))
        running = spool.start(["sleep", "60"])
        wait_until(lambda: spool.get(running.id).pid is not None, message="started")
        # killed after the commit that deleted an execution, before its file was unlinked
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("DELETE FROM executions WHERE id = ?", (gone,))
        conn.close()
        assert (folder / f"{gone}.seg").exists()
        lost = folder / f"{kept}.7-0-0.seg"  # a trimmed tail chunk's file, its unlink lost
        lost.write_bytes(b"x" * 100)
        pending = folder / f"{running.id}.3-0-0.seg"  # written before its row is committed
        pending.write_bytes(b"y")
        assert spool.prune(older_than=3600).count == 0  # nothing old: it only sweeps
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"{kept}.seg", pending.name])
        assert len(spool.read(kept)) == 1_000_000
        running.cancel("the test is over")
