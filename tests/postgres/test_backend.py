"""What only the PostgreSQL backend has: URLs, schemas, versions, messages, pushed waits."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from psycopg import sql

from outspool.errors import SchemaTooNewError, StoreError
from outspool.jobs import Job
from outspool.progress import Progress
from outspool.settings import Settings
from outspool.store import SCHEMA_VERSION, OutputUpdate, Store, WriteBatch, open_store
from outspool.store.base import Started
from outspool.store.postgres import PostgresStore
from tests.contract.test_store import raw_chunk
from tests.postgres.database import DSN, admin

pytestmark = pytest.mark.postgres

OpenPg = Callable[..., Store]
SQL_DIR = Path(__file__).parents[2] / "src" / "outspool" / "store" / "sql"


def _names(path: Path) -> set[str]:
    return {
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("-- name:")
    }


def test_both_dialects_define_the_same_queries() -> None:
    assert _names(SQL_DIR / "postgres.sql") == _names(SQL_DIR / "sqlite.sql")


def _schema(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def _version(url: str) -> object:
    """The format version stored in the test's schema, read as another client would."""
    with contextlib.closing(admin()) as conn:
        table = sql.Identifier(_schema(url), "outspool_schema")
        return conn.execute(sql.SQL("SELECT version FROM {}").format(table)).fetchall()


def test_schema_param_creates_and_isolates_a_schema(open_pg: OpenPg, pg_url: str) -> None:
    store = open_pg()
    assert isinstance(store, PostgresStore)
    assert _version(pg_url) == [(SCHEMA_VERSION,)]
    store.create(Job(command=("x",)), "only-here", 1.0)
    with contextlib.closing(admin()) as conn:
        query = "SELECT count(*) FROM {}.executions"
        row = conn.execute(sql.SQL(query).format(sql.Identifier(_schema(pg_url)))).fetchone()
    assert row == (1,)


def test_concurrent_openers_of_a_new_schema_all_succeed(open_pg: OpenPg, pg_url: str) -> None:
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_pg()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert isinstance(open_pg(), PostgresStore)
    assert _version(pg_url) == [(SCHEMA_VERSION,)]


def test_newer_database_is_refused(open_pg: OpenPg, pg_url: str) -> None:
    open_pg()
    with contextlib.closing(admin()) as conn:
        table = sql.Identifier(_schema(pg_url), "outspool_schema")
        conn.execute(sql.SQL("UPDATE {} SET version = version + 1").format(table))
    with pytest.raises(SchemaTooNewError, match=r"newer outspool.*upgrade outspool"):
        open_pg()


def test_unreachable_server_is_one_clear_line() -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/test"
    with pytest.raises(StoreError) as caught:
        open_store(url, Settings.load())
    message = str(caught.value)
    assert message.startswith("cannot reach PostgreSQL at 127.0.0.1:1: ")
    assert "\n" not in message
    assert "s3cret" not in message


def test_describe_masks_the_password() -> None:
    store = PostgresStore("postgresql://me:s3cret@db.example:6543/x?schema=a&password=p2")
    assert "s3cret" not in store.describe()
    assert "p2" not in store.describe()
    assert store.describe().startswith("postgresql://me:***@db.example:6543/x?")


def test_bad_login_is_explained(pg_url: str) -> None:
    parts = urlsplit(DSN)
    url = urlunsplit(parts._replace(netloc=f"no_such_role_x@{parts.hostname}:{parts.port or 5432}"))
    with pytest.raises(StoreError, match=r"refused the connection: .*no_such_role_x"):
        open_store(url, Settings.load())


def test_wait_is_woken_by_notify_quickly(open_pg: OpenPg) -> None:
    writer, follower = open_pg(), open_pg()
    writer.create(Job(command=("x",)), "e1", 1.0)
    follower.wait("e1", 0.01)  # starts the listener
    woke: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        follower.wait("e1", 10.0)
        woke.append(time.monotonic() - start)

    thread = threading.Thread(target=wait)
    thread.start()
    writer.write(
        WriteBatch([raw_chunk("e1", 0, (0, 0), b"hi\n", b"")], [OutputUpdate("e1", 3, 0, 1, 2.0)])
    )
    thread.join(10)
    assert woke and woke[0] < 5.0


def test_a_commit_between_read_and_wait_is_not_slept_through(open_pg: OpenPg) -> None:
    writer, follower = open_pg(), open_pg()
    writer.create(Job(command=("x",)), "e2", 1.0)
    follower.wait("e2", 0.5)  # this thread has now waited once on e2
    writer.write(
        WriteBatch([raw_chunk("e2", 0, (0, 0), b"a", b"")], [OutputUpdate("e2", 1, 0, 1, 2.0)])
    )
    start = time.monotonic()
    follower.wait("e2", 5.0)  # its notification came (or comes) while we were not waiting
    assert time.monotonic() - start < 4.0


def test_retried_write_batch_is_idempotent(open_pg: OpenPg) -> None:
    store = open_pg()
    store.create(Job(command=("x",)), "e3", 1.0)
    batch = WriteBatch(
        [raw_chunk("e3", 0, (0, 0), b"out", b"err")], [OutputUpdate("e3", 3, 3, 1, 2.0)]
    )
    store.write(batch)
    store.write(batch)  # as if the first COMMIT's reply was lost and the writer retried
    assert len(store.chunks_after("e3", -1, 10)) == 1
    ex = store.get("e3")
    assert (ex.stdout_size, ex.stderr_size, ex.chunk_count) == (3, 3, 1)


def test_progress_text_with_nul_is_stored(open_pg: OpenPg) -> None:
    store = open_pg()
    store.create(Job(command=("x",)), "e4", 1.0)
    update = OutputUpdate("e4", 0, 0, 0, 2.0, Progress("50%\x00 done", 50.0))
    store.write(WriteBatch([], [update]))
    assert store.get("e4").progress == "50%\ufffd done"


def test_a_read_only_open_creates_no_schema(pg_url: str) -> None:
    with pytest.raises(StoreError, match=r"^no database at postgresql://"):
        open_store(pg_url, Settings.load(), create=False)
    with contextlib.closing(admin()) as conn:
        query = "SELECT count(*) FROM pg_namespace WHERE nspname = %s"
        assert conn.execute(query, (_schema(pg_url),)).fetchone() == (0,)


def test_a_group_commit_is_one_round_trip(open_pg: OpenPg, pg_url: str, tmp_path: Path) -> None:
    """A commit's statements go out together and the server answers once (libpq's own
    trace of the connection counts the answers): it took four round trips, BEGIN, the
    chunk rows, the totals and COMMIT, each a wake-up of the server and of the writer."""
    open_pg().close()  # creates the schema
    store = PostgresStore(pg_url)
    store._get_pool().wait()  # its one connection is ready: one thread never needs another
    keys = ["r1", "r2", "r3"]
    for key in keys:
        store.create(Job(command=("x",)), key, 1.0)
    chunks = [raw_chunk(k, 0, (0, 0), f"{k}\n".encode(), b"") for k in keys]
    progress = Progress("50%", 50.0)
    updates = [OutputUpdate(k, 3, 0, 1, 2.0, progress) for k in keys]
    started = [Started(k, 10 + i, 1.5, "w") for i, k in enumerate(keys)]
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        with store._connection() as conn:  # the pool's one connection: the next write's
            conn.pgconn.trace(out.fileno())
        store.write(WriteBatch(chunks, updates, started=started))
        with store._connection() as conn:
            conn.pgconn.untrace()
    assert trace.read_text().count("ReadyForQuery") == 1
    for i, key in enumerate(keys):
        got = store.get(key)
        assert (got.status, got.pid, got.chunk_count, got.progress) == ("running", 10 + i, 1, "50%")
    store.close()


def test_a_failed_group_commit_stores_none_of_it(open_pg: OpenPg) -> None:
    """Sent in one go, a commit is still all or nothing: the server runs the statements
    before the one Sync as one implicit transaction, and a total that fails (here out of
    range) takes the chunk rows sent before it back; the connection serves the next write."""
    store = open_pg()
    store.create(Job(command=("x",)), "f1", 1.0)
    chunk = raw_chunk("f1", 0, (0, 0), b"kept?\n", b"")
    with pytest.raises(StoreError, match="out of range"):
        store.write(WriteBatch([chunk], [OutputUpdate("f1", 6, 0, 2**40, 2.0)]))
    assert store.chunks_after("f1", -1, 10) == []
    assert store.get("f1").chunk_count == 0
    store.write(WriteBatch([chunk], [OutputUpdate("f1", 6, 0, 1, 2.0)]))
    assert len(store.chunks_after("f1", -1, 10)) == 1
    assert store.get("f1").chunk_count == 1
