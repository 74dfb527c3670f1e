"""The PostgreSQL backend: one database shared by workers and followers on many machines.

The store verbs live in :mod:`outspool.store.core`; this module supplies the
connections, transactions, the opening (schema, advisory-locked migration),
chunk payloads as binary ``bytea`` and :meth:`PostgresStore.wait`.

Connections come from a ``psycopg_pool.ConnectionPool`` in autocommit mode: a
read is one round trip, a write is one explicit transaction, and a group commit is
one round trip too (one pipeline, one implicit transaction: :meth:`_unread_transaction`). A pooled
connection idle for more than ``FRESH`` seconds is checked (one more round trip)
before it is handed out, and a statement that finds its connection lost has
every idle one checked at once, so connections that died (server restart,
``pg_terminate_backend``, a network cut) are replaced instead of failing the
next calls; a read that lost its connection is repeated, until ``busy_timeout``. Checking every
connection at every use cost a third of the writer's time on a busy queue.
Every failure becomes a one-line :class:`StoreError`; the writer retries those,
and its retries are safe because chunk inserts skip rows that already exist
and totals are absolute values.

Changes are pushed: the statements that change what a follower sees call
``pg_notify('outspool', execution_id)``, and :meth:`PostgresStore.wait` is
woken by one LISTEN connection per store (:class:`Listener`), however many
threads wait.

``?schema=NAME`` in the URL keeps outspool's tables in that schema (created if
missing): the parameter is removed before connecting and every connection sets
its ``search_path`` to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from outspool.codec import ChunkRecord
from outspool.errors import StoreError
from outspool.settings import Settings
from outspool.store.core import Checked, Cursor, Params, SqlStore, Subscribers

#: The NOTIFY channel the queries in postgres.sql send on; the payload is an execution ID.
CHANNEL = "outspool"
#: Most connections one store holds (writer, heartbeat, worker loop, readers).
POOL_MAX = 10
#: Seconds to wait for a server that does not answer a new connection.
CONNECT_TIMEOUT = 10
#: A pooled connection used this recently is handed out without a check.
FRESH = 1.0

#: The listener keeps per-execution state for this many executions at least...
WATCHES_KEPT = 256
#: ...and drops the state of one nobody has waited on for this many seconds.
WATCH_IDLE = 60.0

# The pool logs each failed reconnection; the writer already reports the outage once.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed database URL: what to connect to, and how to name it in messages."""

    conninfo: str  #: the URL without outspool's own parameters
    schema: str | None
    host: str
    port: str
    dbname: str
    user: str
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        pairs = _query(parts.query)
        schema = next((unquote(v) for k, v in pairs if k == "schema"), None)
        rest = "&".join(f"{k}={v}" for k, v in pairs if k != "schema")
        conninfo = urlunsplit(parts._replace(query=rest))
        try:
            info = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"bad PostgreSQL URL {_mask(url)}: {_first_line(exc)}") from None
        if schema == "":
            raise StoreError(f"bad PostgreSQL URL {_mask(url)}: empty schema")
        return cls(
            conninfo=conninfo,
            schema=schema,
            host=str(info.get("host") or parts.hostname or "localhost"),
            port=str(info.get("port") or parts.port or 5432),
            dbname=str(info.get("dbname") or ""),
            user=str(info.get("user") or ""),
            password=None if info.get("password") is None else str(info.get("password")),
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database (or one schema of it)."""

    dialect = "postgres"
    text_holds_nul = False
    #: A byte stored costs the server more CPU than level 1 costs the capture (it goes
    #: through the socket, into the WAL and into the table, which PostgreSQL 15 extends a
    #: zero-filled page at a time): level 1 stores base64 text in 0.75 bytes per byte and
    #: log text in half what -1 does, at about the same speed on text (docs/performance.md).
    compression_level = 1
    #: A claim that finds nothing locks nothing here (``SKIP LOCKED``, no row updated), so
    #: it goes straight to the claim: one round trip per claim instead of two.
    claim_looks_first = False

    def __init__(
        self, url: str, settings: Settings | None = None, *, lock_timeout: float | None = None
    ) -> None:
        super().__init__()
        self.url = url
        self.target = Target.parse(url)
        self._settings = settings or Settings.load()
        self._timeout = self._settings.busy_timeout
        self._lock_timeout = lock_timeout
        self._pool: ConnectionPool | None = None
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )  # when each pooled connection last worked

    def describe(self) -> str:
        return _mask(self.url)

    # --- connections -----------------------------------------------------------

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        """A new connection outside the pool, configured like pooled ones (caller closes)."""
        with self._errors("connect to"):
            conn = psycopg.connect(
                self.target.conninfo,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT,
            )
            try:
                self._configure(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        if self.target.schema is not None:
            conn.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self.target.schema))
            )
        if self._lock_timeout is not None:
            wait = sql.Literal(f"{max(1, round(self._lock_timeout * 1000))}ms")
            conn.execute(sql.SQL("SET lock_timeout TO {}").format(wait))

    def presence(self, lock_timeout: float) -> PostgresStore:
        """A store of its own (one pooled connection, reconnected like any) for the
        heartbeat: the writer's transactions, and any lock that stalls them, never make
        it wait for a connection, and it waits at most ``lock_timeout`` for a lock."""
        return PostgresStore(self.url, self._settings, lock_timeout=lock_timeout)

    def _get_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.target.conninfo,
                    min_size=1,
                    max_size=POOL_MAX,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                    configure=self._configure,
                    timeout=max(1.0, self._timeout),
                    name=f"outspool {self.target.where}",
                    open=False,
                )
                self._pool.open(wait=False)
            return self._pool

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The check before using ``conn``: skipped if it just worked."""
        used = self._used.get(conn)
        if used is None or time.monotonic() - used > FRESH:
            ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, checked alive first unless it worked within ``FRESH``
        seconds, and noted as working if it is given back without an error. One that
        died while idle (``pg_terminate_backend``, a restart, a network cut) goes back
        broken, so the pool replaces it, and the next is tried at once, for up to
        ``busy_timeout``. (The pool's own ``check`` waited 1, 2, 4... seconds between
        dead connections: a server dropping connections every half second outran any
        timeout that way.)"""
        deadline = time.monotonic() + max(1.0, self._timeout)
        while True:
            with self._get_pool().connection() as conn:
                try:
                    self._check(conn)
                except psycopg.OperationalError:
                    if time.monotonic() >= deadline:
                        raise
                    continue
                yield conn
                self._used[conn] = time.monotonic()
                return

    @contextlib.contextmanager
    def _statement(self, doing: str) -> Iterator[Cursor]:
        """A pooled connection in autocommit: one statement, one round trip."""
        with (
            self._errors(doing),
            self._connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[Cursor]:
        with (
            self._errors(doing),
            self._connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    @contextlib.contextmanager
    def _unread_transaction(self, doing: str) -> Iterator[Cursor]:
        """One round trip for the whole transaction: its statements go out in one pipeline
        with a single ``Sync`` and no ``BEGIN``; the server runs the messages before a
        ``Sync`` as one implicit transaction, committed at the ``Sync`` if every statement
        succeeded and rolled back if any failed. A group commit took four round trips
        (``BEGIN``, chunk rows, totals, ``COMMIT``), each a wake-up of the server's backend
        and of the writer, which is what a commit waits for on a busy machine."""
        if not psycopg.Pipeline.is_supported():
            with self._transaction(doing) as cur:
                yield cur
            return
        with (
            self._errors(doing),
            self._connection() as conn,
            conn.pipeline(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    def _rows(self, name: str, params: Params) -> list[Any]:
        return self._read(name, params, binary=False)

    def _read(self, name: str, params: Params, binary: bool) -> list[Any]:
        """Rows of a read; a connection that drops under it is replaced (reads repeat),
        again and again for up to ``busy_timeout``, so a reader rides through a server
        that keeps dropping connections."""
        deadline = time.monotonic() + max(1.0, self._timeout)
        with self._errors("read"):
            while True:
                try:
                    return self._fetch(name, params, binary)
                except psycopg.OperationalError as exc:
                    if not _connection_lost(exc) or time.monotonic() >= deadline:
                        raise
                    self._check_idle()

    def _fetch(self, name: str, params: Params, binary: bool) -> list[Any]:
        with self._connection() as conn:
            factory: Any = tuple_row if binary else dict_row
            with conn.cursor(row_factory=factory, binary=binary) as cur:
                return cur.execute(self.sql[name], params).fetchall()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if pool is not None:
            pool.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except PoolTimeout:
            raise StoreError(
                f"cannot reach PostgreSQL at {self.target.where}: "
                f"no connection within {max(1.0, self._timeout):g} s"
            ) from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and _connection_lost(exc):
                self._check_idle()
            raise StoreError(self._explain(doing, exc)) from None

    def _check_idle(self) -> None:
        """A connection was lost: check every idle one, replacing those that died too."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            with contextlib.suppress(psycopg.Error, PoolTimeout):
                pool.check()

    def _explain(self, doing: str, exc: psycopg.Error) -> str:
        text = _first_line(exc)
        if self.target.password:
            text = text.replace(self.target.password, "***")
        where = self.target.where
        if isinstance(exc, psycopg.OperationalError) and (
            "connection failed" in text or "failed to resolve" in text
        ):
            reason = text.rsplit("failed: ", 1)[-1].strip()
            if reason.startswith("FATAL:"):
                reason = reason.removeprefix("FATAL:").strip()
                return f"PostgreSQL at {where} refused the connection: {reason}"
            return f"cannot reach PostgreSQL at {where}: {reason}"
        if isinstance(exc, psycopg.OperationalError) and _connection_lost(exc):
            return f"lost the connection to PostgreSQL at {where}: {text}"
        return f"cannot {doing} PostgreSQL database {self.describe()}: {text}"

    # --- schema ----------------------------------------------------------------

    @contextlib.contextmanager
    def _schema_cursor(self, create: bool) -> Iterator[Cursor]:
        """A connection of its own (it fails fast), the whole opening in one transaction."""
        with contextlib.closing(self.connect()) as conn, self._errors("upgrade"):
            if create:
                self._create_schema(conn)
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def _exclusive(self, cur: Cursor) -> contextlib.AbstractContextManager[None]:
        # Already in the opening transaction; schema_version_table takes an advisory lock.
        return contextlib.nullcontext()

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self.target.schema is None:
            return
        name = sql.Identifier(self.target.schema)
        # Two openers may both find the schema missing: the loser's error means it exists.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))

    # --- chunk payloads: bytea in the chunk rows ----------------------------------

    def _removed(self, files: Mapping[str, list[str]]) -> None:
        """Nothing outside the rows: chunk payloads are ``bytea``."""

    def _deleted(self, files: Mapping[str, list[str]]) -> None:
        """Nothing outside the rows."""

    def reclaim(self) -> None:
        """Deleted rows are reused after autovacuum, which runs by itself; nothing to do."""

    def _finishing(self, execution_id: str) -> None:
        """Nothing to release: every chunk is a row."""

    def _chunks(self, name: str, params: Params) -> list[Checked]:
        """Chunk rows, fetched in binary so blobs arrive as they are stored."""
        return [(ChunkRecord(*r), None) for r in self._read(name, params, binary=True)]

    # --- changes -----------------------------------------------------------------

    def wait(self, execution_id: str, timeout: float) -> None:
        """Sleep until a NOTIFY for ``execution_id`` arrives (or ``timeout`` passes)."""
        self._listening().wait(execution_id, timeout)

    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        return self._listening().subscribe(execution_id, changed)

    def _listening(self) -> Listener:
        with self._lock:
            if self._listener is None:
                self._listener = Listener(self)
                self._listener.start()
            return self._listener


@dataclass
class _Watch:
    """What the listener knows of one watched execution."""

    cond: threading.Condition
    generation: int = 0  #: bumped on every notification
    waiting: int = 0
    used: float = 0.0  #: when a thread last waited on it (monotonic)
    seen: dict[int, int] = field(default_factory=dict)  #: thread -> generation it last saw


class Listener:
    """One LISTEN connection per store, fanning notifications out to waiting threads.

    A thread's :meth:`wait` returns at once when a notification arrived since
    that thread's previous wait on the same execution, so a commit landing
    between a follower's read and its next wait is not slept through. While the
    connection is down waiters time out; on every (re)connection all of them are
    woken, since a notification may have been missed.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._subscribers = Subscribers(self._lock)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outspool-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2.0)

    def wait(self, execution_id: str, timeout: float) -> None:
        me = threading.get_ident()
        with self._lock:
            watch = self._watches.get(execution_id)
            if watch is None:
                watch = self._watches[execution_id] = _Watch(threading.Condition(self._lock))
            start = watch.seen.get(me, watch.generation)
            watch.waiting += 1
            try:
                watch.cond.wait_for(lambda: watch.generation != start, timeout)
            finally:
                watch.waiting -= 1
            watch.seen[me] = watch.generation
            watch.used = time.monotonic()
            if len(self._watches) > WATCHES_KEPT:
                self._forget_idle(watch.used - WATCH_IDLE)

    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed()`` on every notification for ``execution_id`` (and on every
        (re)connection) until the returned function is called."""
        return self._subscribers.add(execution_id, changed, lambda _: None)

    def _forget_idle(self, before: float) -> None:
        """Under the lock: drop executions nobody has waited on since ``before``."""
        stale = [k for k, w in self._watches.items() if not w.waiting and w.used < before]
        for key in stale:
            del self._watches[key]

    def _wake(self, execution_id: str | None) -> None:
        with self._lock:
            watches = self._watches.values() if execution_id is None else []
            if execution_id is not None and (found := self._watches.get(execution_id)):
                watches = [found]
            for watch in watches:
                watch.generation += 1
                watch.cond.notify_all()
            if execution_id is None:
                called = [f for fs in self._subscribers.of.values() for f in fs]
            else:
                called = list(self._subscribers.of.get(execution_id, []))
        for changed in called:
            changed()

    def _run(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            try:
                with contextlib.closing(self._store.connect()) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._wake(None)  # anything sent before LISTEN was missed: re-read
                    delay = 0.05
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=0.2):
                            self._wake(note.payload)
            except (StoreError, psycopg.Error):
                self._wake(None)
                self._stopping.wait(delay)
                delay = min(delay * 2, 2.0)


def _connection_lost(exc: psycopg.Error) -> bool:
    """The client lost the server (no SQLSTATE), or the server ended the session."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _query(query: str) -> list[tuple[str, str]]:
    """``key=value`` pairs of a URL query, values left encoded (as libpq will decode them)."""
    pairs = [piece.partition("=") for piece in query.split("&") if piece]
    return [(unquote(k), v) for k, _, v in pairs]


def _mask(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the authority or the query)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = "&".join(f"{k}={'***' if k == 'password' else v}" for k, v in _query(parts.query))
    return urlunsplit(parts._replace(netloc=netloc, query=query))
