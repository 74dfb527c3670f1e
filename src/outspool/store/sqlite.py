"""The SQLite backend: the embedded default, one file, no server.

The store verbs live in :mod:`outspool.store.core`; this module supplies the
connections, transactions, the opening (WAL, page size), chunk payloads (large
blobs in segment files, ``segments.py``), the checkpointer and a polling :meth:`wait`.

WAL mode with ``synchronous=NORMAL``: readers never block the writer nor wait
for it, and a commit costs no fsync. Each thread gets its own connection.
Checkpoints (copying the WAL into the database, with its fsyncs) run on a
thread of their own, so a writer never waits for the disk.
Writes take the lock up front (``BEGIN IMMEDIATE``) and wait up to
``busy_timeout`` for another process's transaction, so several capturing
processes can share one file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from outspool.codec import ChunkRecord
from outspool.errors import DamagedError, StoreError
from outspool.models import Status
from outspool.store import fswatch, segments
from outspool.store.core import Checked, Cursor, Params, SqlStore, Subscribers, chunk_row

#: The columns of a chunk row that say where its blobs are in a segment file.
_PLACEMENT = ("blob_offset", "blob_stdout_length", "blob_stderr_length", "blob_crc")
#: Page size of new database files. Larger pages mean fewer writes per MiB of bulk
#: output; smaller ones, fewer bytes per commit of a trickle. 8 KiB measured best
#: overall here (docs/performance.md).
PAGE_SIZE = 8192
#: Pages freed per incremental_vacuum step (each holds the write lock briefly).
VACUUM_STEP = 256
#: With a watch of the directory, ``data_version`` is still read this often (seconds):
#: a safety net for a commit the kernel would not report (a file system without inotify).
WATCH_RECHECK = 0.25
#: After the directory was written, ``data_version`` is read at the next write or within
#: ``poll_interval``, for this long (seconds): the kernel reports a commit's first write
#: to the ``-wal`` file, but the commit becomes visible only when the WAL index in the
#: ``-shm`` file (a memory map, which the kernel does not report) is updated after its last.
WATCH_SETTLE = 1.0


class SqliteStore(SqlStore):
    """A store in one SQLite file."""

    dialect = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 30.0, poll_interval: float = 0.01) -> None:
        if path in ("", ":memory:"):
            raise StoreError("an in-memory SQLite database cannot be shared; give a file path")
        super().__init__()
        self.path = Path(path).expanduser()
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._watches: list[fswatch.DirectoryWatch] = []
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._poller: _Poller | None = None
        self.segments = segments.Segments(self.path)

    def describe(self) -> str:
        return str(self.path)

    # --- connections -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._errors("open"):
            if not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's job
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            checkpointer, self._checkpointer = self._checkpointer, None
            poller, self._poller = self._poller, None
        if checkpointer is not None:
            checkpointer.stop()
        if poller is not None:
            poller.stop()
        self.segments.close()
        with self._lock:
            conns, self._all = self._all, []
            watches, self._watches = self._watches, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        for watch in watches:
            watch.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise StoreError(_explain(self.path, doing, exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot {doing} database {self.path}: {exc.strerror}") from None

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[Cursor]:
        conn = self._connect()
        with self._errors(doing):
            cur = conn.cursor()
            with self._exclusive(cur):
                yield cur
        self._checkpoints().note()

    _statement = _transaction  # every write takes the lock up front (BEGIN IMMEDIATE)

    @contextlib.contextmanager
    def _exclusive(self, cur: Cursor) -> Iterator[None]:
        conn = self._connect()  # this thread's, the one ``cur`` belongs to
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a failed COMMIT (disk full) must not leave it open
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _rows(self, name: str, params: Params) -> list[Any]:
        conn = self._connect()
        with self._errors("read"):
            return conn.execute(self.sql[name], params).fetchall()

    def _checkpoints(self) -> _Checkpointer:
        with self._lock:
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer(self._connect_checkpointer, self.segments.sync)
            return self._checkpointer

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        return conn

    # --- schema ----------------------------------------------------------------

    @contextlib.contextmanager
    def _schema_cursor(self, create: bool) -> Iterator[Cursor]:
        if not create and not self.path.is_file():
            raise self._missing()  # before connecting, which would create the file
        conn = self._connect()
        with self._errors("open"):
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                if not create:
                    raise self._missing()
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only a new file can take it
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # deleting can shrink it
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
            if create:
                _incremental(conn)
            yield conn.cursor()

    # --- chunk payloads: large blobs in segment files ----------------------------

    def _chunk_row(self, c: ChunkRecord) -> dict[str, Any]:
        params = chunk_row(c) | {"blob_file": None}
        out, err = c.stdout or b"", c.stderr or b""
        if len(out) + len(err) < segments.THRESHOLD:
            return params | dict.fromkeys(_PLACEMENT)
        if c.trimmable:  # a tail window's chunk: a file of its own, deleted with it
            tag = f"{c.chunk_index}-{c.stdout_offset}-{c.stderr_offset}"
            params["blob_file"], where = self.segments.write_own(
                c.execution_id, tag, out, err, c.blob_crc
            )
        else:
            where = self.segments.append(c.execution_id, out, err, c.blob_crc)
        return params | {
            "stdout": None,
            "stderr": None,
            "blob_offset": where.offset,
            "blob_stdout_length": where.stdout_length,
            "blob_stderr_length": where.stderr_length,
            "blob_crc": where.crc,
        }

    def _chunks(self, name: str, params: Params) -> list[Checked]:
        return [r for r in map(self._record, self._rows(name, params)) if r is not None]

    def _record(self, row: sqlite3.Row) -> Checked | None:
        """The chunk with its blobs and, for a segment file's, the CRC they were checked
        against; None if it was trimmed since the row was read."""
        record = ChunkRecord(*tuple(row)[:13])
        if row["blob_offset"] is None:
            return record, None
        try:
            where = segments.Placement(*(int(row[k]) for k in _PLACEMENT))
        except (TypeError, ValueError):
            raise DamagedError(
                f"chunk {record.chunk_index} of {record.execution_id} is damaged "
                "(its segment placement is not a number)"
            ) from None
        found = self.segments.read(record.execution_id, record.chunk_index, where, row["blob_file"])
        if found is None:  # trimmed since the row was read, or cut at the end: look again
            return self._record_again(record, row["blob_file"])
        out, err = found
        return replace(record, stdout=out or None, stderr=err or None), where.crc

    def _record_again(self, record: ChunkRecord, vanished: str) -> Checked | None:
        rows = self._rows("chunk_at", {"id": record.execution_id, "index": record.chunk_index})
        if not rows or rows[0]["blob_file"] == vanished:
            return None
        return self._record(rows[0])

    def _removed(self, files: Mapping[str, list[str]]) -> None:
        for execution_id, names in files.items():
            self.segments.remove(execution_id, names)

    def _deleted(self, files: Mapping[str, list[str]]) -> None:
        for execution_id, names in files.items():
            self.segments.remove_all(execution_id, names)

    def reclaim(self) -> None:
        """Free pages go back to the filesystem a step at a time (each step a short write);
        files a crash left behind are removed."""
        self._sweep()
        conn = self._connect()
        with self._errors("write to"):
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            while free:  # executescript steps the pragma to its end (execute frees one page)
                began = time.monotonic()
                conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
                left = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if left >= free:
                    break  # not an incremental database (its conversion is still pending)
                free = left
                if free:  # as long as the step held the lock, so waiting writers get it
                    time.sleep(min(time.monotonic() - began, 0.05))
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _sweep(self) -> None:
        """Remove the files of executions that are gone, and those of a finished execution's
        trimmed tail chunks that no row names. Files are listed before the rows are read,
        and a row exists before its execution's first file is written, so a file found
        without its execution is an orphan. A running execution is left alone: its next
        chunk's file is written before the row naming it is committed."""
        for execution_id, names in self.segments.listing().items():
            found = self._rows("get_execution", {"id": execution_id})
            if not found:
                self.segments.remove_all(execution_id, names)
                continue
            if not Status(found[0]["status"]).finished or found[0]["status"] == Status.LOST:
                continue
            named = {r["blob_file"] for r in self._rows("chunk_files", {"id": execution_id})}
            main = self.segments.path(execution_id).name
            self.segments.remove(execution_id, [n for n in names if n != main and n not in named])

    def _finishing(self, execution_id: str) -> None:
        self.segments.release(execution_id)

    # --- changes -----------------------------------------------------------------

    def wait(self, execution_id: str, timeout: float) -> None:
        """Until another connection commits (``PRAGMA data_version`` changes): woken by the
        kernel when the file's directory is written (inotify), else by polling every
        ``poll_interval``."""
        conn = self._connect()
        watch = self._watch()
        deadline = time.monotonic() + timeout
        with self._errors("read"):
            if watch is not None:
                watch.drain()  # before the version is read: a commit after it wakes us
            start = conn.execute("PRAGMA data_version").fetchone()[0]
            settled = 0.0  # until then, a write seen in the directory may be a commit's first
            while (left := deadline - time.monotonic()) > 0:
                if watch is None:
                    time.sleep(min(self._poll_interval, left))
                else:
                    now = time.monotonic()
                    recheck = self._poll_interval if now < settled else WATCH_RECHECK
                    if watch.wait(min(recheck, left)):
                        settled = time.monotonic() + WATCH_SETTLE
                if conn.execute("PRAGMA data_version").fetchone()[0] != start:
                    return

    def _watch(self) -> fswatch.DirectoryWatch | None:
        """This thread's watch of the database's directory (None: poll instead)."""
        if not hasattr(self._local, "watch"):
            watch = fswatch.open_watch(self.path.parent)
            self._local.watch = watch
            if watch is not None:
                with self._lock:
                    self._watches.append(watch)
        found: fswatch.DirectoryWatch | None = self._local.watch
        return found

    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            if self._poller is None:
                self._poller = _Poller(self._connect_checkpointer, self.sql, self._poll_interval)
            poller = self._poller
        return poller.subscribe(execution_id, changed)


_UNSEEN = ("unseen",)  # a row no poll has read yet (a missing row reads as None)


class _Poller:
    """Tells subscribers which executions changed: one thread and connection per store.

    Every ``interval`` it reads ``data_version``; when another connection committed (or
    someone subscribed), it reads the subscribed executions' rows in one query and calls
    the subscribers of those whose row differs from the last round. So a commit to one
    execution wakes its followers only, however many executions are followed. The thread
    ends when the last subscription does.
    """

    BATCH = 500  # executions per query
    RETRY = 0.5  # seconds before trying again after an error

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], sql: Mapping[str, str], interval: float
    ) -> None:
        self._connect = connect
        self._query = sql["watched_executions"]
        self._interval = interval
        self._lock = threading.Lock()
        self._subscribers = Subscribers(self._lock)
        self._seen: dict[str, tuple[Any, ...] | None] = {}  # each one's row at the last call
        self._fresh = False  # someone subscribed since the last round
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        cancel = self._subscribers.add(execution_id, changed, self._forget)
        with self._lock:
            self._fresh = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outspool-poll", daemon=True)
                self._thread.start()
        return cancel

    def _forget(self, execution_id: str) -> None:
        self._seen.pop(execution_id, None)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        version = None
        try:
            while not self._stopping.wait(self._interval):
                with self._lock:
                    if not self._subscribers.of:
                        self._thread = None
                        return
                    fresh, self._fresh = self._fresh, False
                    ids = list(self._subscribers.of)
                try:
                    conn = conn or self._connect()
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now == version and not fresh:
                        continue
                    version = now
                    rows = self._rows(conn, ids)
                except sqlite3.Error:  # busy or away: every subscriber reads and meets it
                    if conn is not None:
                        conn.close()
                    conn, version = None, None
                    self._call(ids)
                    self._stopping.wait(self.RETRY)
                    continue
                seen = self._seen  # (cancel() may drop an entry meanwhile)
                self._call([i for i in ids if seen.get(i, _UNSEEN) != rows.get(i)], rows)
        finally:
            if conn is not None:
                conn.close()
            with self._lock:  # however it ended, the next subscription starts another
                if self._thread is threading.current_thread():
                    self._thread = None

    def _rows(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(ids), self.BATCH):
            batch = json.dumps(ids[start : start + self.BATCH])
            for row in conn.execute(self._query, {"ids": batch}):
                found[row[0]] = tuple(row[1:])
        return found

    def _call(self, ids: list[str], rows: Mapping[str, tuple[Any, ...]] | None = None) -> None:
        """Call the subscribers of ``ids`` (remembering their ``rows``)."""
        with self._lock:
            called = []
            for execution_id in ids:
                mine = self._subscribers.of.get(execution_id)
                if mine is None:
                    continue  # cancelled meanwhile
                if rows is not None:
                    self._seen[execution_id] = rows.get(execution_id)
                called += mine
        for changed in called:
            changed()


class _Checkpointer:
    """Copies the WAL into the database from its own thread and connection.

    Commits only say that there is something to copy; a passive checkpoint runs
    when ``CHECKPOINT_EVERY`` commits are pending or a second has passed, and
    once more on stop, so the WAL stays small without a writer ever waiting.
    """

    EVERY = 32  # commits between checkpoints under load
    IDLE = 1.0  # seconds after which pending commits are checkpointed anyway

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], before: Callable[[], None]
    ) -> None:
        self._connect = connect
        self._before = before
        self._pending = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="outspool-checkpoint", daemon=True)
        self._thread.start()

    def note(self) -> None:
        self._pending += 1
        if self._pending >= self.EVERY:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error:
            return  # the writer's own errors say what is wrong
        try:
            while not self._stopping:
                self._wake.wait(self.IDLE)
                self._wake.clear()
                if self._pending:
                    self._pending = 0
                    self._checkpoint(conn)
            self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        self._before()  # segment bytes reach the disk before rows pointing at them do
        with contextlib.suppress(sqlite3.Error):  # busy or failing: the next round tries again
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _incremental(conn: sqlite3.Connection) -> None:
    """Files made before format 7 switch to ``auto_vacuum=INCREMENTAL`` (one VACUUM), so
    deleting output can shrink them; when busy, the next writing open tries again."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")


def _explain(path: Path, doing: str, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not an outspool database, or it is damaged ({text})"
    if "locked" in text or "busy" in text:
        return f"database {path} stayed locked by another process ({text})"
    if "readonly" in text or "unable to open" in text:
        return f"cannot {doing} database {path}: {text} (check the path and its permissions)"
    if "disk" in text or "full" in text:
        return f"cannot {doing} database {path}: {text}"
    return f"cannot {doing} database {path}: {text}"
