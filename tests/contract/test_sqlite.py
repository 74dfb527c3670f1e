"""What only the SQLite backend has: the file, its format version, WAL, inline columns."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from outspool.errors import SchemaTooNewError, StoreError
from outspool.jobs import Job
from outspool.models import Outcome, Status
from outspool.settings import Settings
from outspool.store import SCHEMA_VERSION, fswatch, open_store, queries
from outspool.store import sqlite as sqlite_module
from outspool.store.sqlite import SqliteStore

SQL_DIR = Path(__file__).parents[2] / "src" / "outspool" / "store" / "sql"


def _sql(db: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the file directly, as another program would; its rows."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(query, params).fetchall()


def _open(path: Path | str) -> SqliteStore:
    store = open_store(str(path), Settings.load())
    assert isinstance(store, SqliteStore)
    return store


def test_new_database_is_wal_at_current_version(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    _open(db).close()
    assert _sql(db, "PRAGMA journal_mode") == [("wal",)]
    assert _sql(db, "SELECT version FROM outspool_schema") == [(SCHEMA_VERSION,)]


def test_sqlite_url_form(tmp_path: Path) -> None:
    store = _open(f"sqlite:///{tmp_path}/url.db")
    store.close()
    assert (tmp_path / "url.db").exists()
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("sqlite://somehost/url.db", Settings.load())


def test_in_memory_database_is_refused() -> None:
    with pytest.raises(StoreError, match="in-memory"):
        open_store(":memory:", Settings.load())


def test_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    _open(db).close()
    _sql(db, "UPDATE outspool_schema SET version = ?", (SCHEMA_VERSION + 5,))
    with pytest.raises(SchemaTooNewError) as err:
        _open(db)
    message = str(err.value)
    assert str(db) in message
    assert "newer" in message
    assert str(SCHEMA_VERSION + 5) in message
    assert "upgrade outspool" in message
    assert _sql(db, "SELECT version FROM outspool_schema") == [(SCHEMA_VERSION + 5,)]


@pytest.mark.skipif(SCHEMA_VERSION < 2, reason="only one format version exists")
def test_older_database_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    """Build a format-1 file by hand (its migration only), then open it with this version."""
    db = tmp_path / "old.db"
    sql = queries.load("sqlite")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(sql["schema_version_table"])
        conn.executescript(sql["migrate_1"])
        conn.execute("INSERT INTO outspool_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO executions (id, status, command, created_at, stdout_size, stdout)"
            " VALUES ('old1', 'succeeded', '[\"echo\", \"hi\"]', 1.0, 3, x'68690a')"
        )
    store = _open(db)
    try:
        assert _sql(db, "SELECT version FROM outspool_schema") == [(SCHEMA_VERSION,)]
        old = store.get("old1")
        assert (old.status, old.command, old.stdout_size) == (
            Status.SUCCEEDED,
            ("echo", "hi"),
            3,
        )
    finally:
        store.close()


def test_garbage_file_is_a_store_error_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not sqlite\x00" * 500)
    with pytest.raises(StoreError) as err:
        _open(db)
    assert "not an outspool database" in str(err.value)
    assert str(db) in str(err.value)


def test_inline_columns_hold_the_output(tmp_path: Path) -> None:
    store = _open(tmp_path / "inline.db")
    try:
        store.create(Job(command=("x",)), "small", 1.0)
        store.create(Job(command=("x",)), "large", 1.0)
        store.finish("small", Outcome(Status.SUCCEEDED, 0), 2.0, (b"o\x00\xff", b"e"))
        store.finish("large", Outcome(Status.SUCCEEDED, 0), 2.0, None)
    finally:
        store.close()
    query = "SELECT id, stdout, stderr, output_truncated FROM executions"
    rows = {r[0]: r[1:] for r in _sql(tmp_path / "inline.db", query)}
    assert rows["small"] == (b"o\x00\xff", b"e", 0)
    assert rows["large"] == (None, None, 1)


def test_chunk_index_exists(tmp_path: Path) -> None:
    _open(tmp_path / "idx.db").close()
    info = _sql(tmp_path / "idx.db", "PRAGMA index_info('idx_output_chunks_execution')")
    columns = [r[2] for r in info]
    assert columns == ["execution_id", "chunk_index"]


def _names(path: Path) -> set[str]:
    return {
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("-- name:")
    }


def test_every_sqlite_query_exists_in_postgres() -> None:
    postgres = SQL_DIR / "postgres.sql"
    if not postgres.exists():
        pytest.skip("store/sql/postgres.sql does not exist yet")
    sqlite_names = _names(SQL_DIR / "sqlite.sql")
    assert sqlite_names == set(queries.load("sqlite"))
    assert sqlite_names - _names(postgres) == set()


@pytest.mark.parametrize("name", ["list_executions", "list_executions_by_status"])
@pytest.mark.parametrize("before", [None, "some-id"])
def test_listing_seeks_an_index_instead_of_scanning(
    tmp_path: Path, name: str, before: str | None
) -> None:
    """A page costs the same at any size: the plan searches an index, never scans the table
    (a scan made list(status) take 48 ms at 201,000 executions; bench/scale/growth.py)."""
    db = tmp_path / "plan.db"
    _open(db).close()
    params = {"status": "running", "before": before, "limit": 50}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + queries.load("sqlite")[name], params)
        steps = [row[3] for row in plan]
    index = "executions_status" if name.endswith("status") else "executions_created"
    assert steps[0].startswith(f"SEARCH executions USING INDEX {index} ("), steps
    assert not any(step.startswith("SCAN executions") for step in steps), steps


def test_a_watch_of_the_directory_wakes_on_a_write_there(tmp_path: Path) -> None:
    watch = fswatch.open_watch(tmp_path)
    assert watch is not None, "inotify is part of every Linux outspool runs on"
    try:
        assert not watch.wait(0)  # nothing written yet
        writer = threading.Thread(target=(tmp_path / "f-wal").write_bytes, args=(b"x",))
        writer.start()
        assert watch.wait(60)
        writer.join()
    finally:
        watch.close()


def test_a_waiter_is_woken_by_the_kernel_not_by_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the safety-net recheck and the wait's timeout beyond the test's own timeout,
    commits from another connection still end the wait: the directory watch woke it."""
    monkeypatch.setattr(sqlite_module, "WATCH_RECHECK", 3600.0)
    store, other = _open(tmp_path / "w.db"), _open(tmp_path / "w.db")
    stop = threading.Event()

    def keep_committing() -> None:  # (one commit could land before the wait starts)
        for n in range(1_000_000):
            if stop.wait(0.01):
                return
            other.create(Job(command=("true",)), f"f{n}", 2.0, Status.QUEUED)

    thread = threading.Thread(target=keep_committing)
    try:
        store.create(Job(command=("true",)), "e", 1.0, Status.QUEUED)
        thread.start()
        store.wait("e", 3600.0)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        store.close()
        other.close()
