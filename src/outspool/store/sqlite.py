"""The SQLite backend: the embedded default, one file, no server.

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
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from outspool.codec import ChunkRecord
from outspool.errors import NotFoundError, SchemaTooNewError, StoreError
from outspool.models import Execution, Outcome, Status, Stream
from outspool.store import queries, segments
from outspool.store.base import SCHEMA_VERSION, LostExecution, NewExecution, WriteBatch

SQL = queries.load("sqlite")
#: Page size of new database files. Larger pages mean fewer writes per MiB of bulk
#: output; smaller ones, fewer bytes per commit of a trickle. 8 KiB measured best
#: overall here (docs/performance.md).
PAGE_SIZE = 8192


class SqliteStore:
    """A store in one SQLite file."""

    can_push = False

    def __init__(self, path: str, busy_timeout: float = 30.0, poll_interval: float = 0.01) -> None:
        if path in ("", ":memory:"):
            raise StoreError("an in-memory SQLite database cannot be shared; give a file path")
        self.url = path
        self.path = Path(path).expanduser()
        self._busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
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
        if checkpointer is not None:
            checkpointer.stop()
        self.segments.close()
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
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
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        with self._errors(doing):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (disk full) must not leave it open
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        self._checkpoints().note()

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

    def migrate(self) -> None:
        conn = self._connect()
        with self._errors("open"):
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only a new file can take it
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
        if self._current_version(conn) == SCHEMA_VERSION:
            return  # the common case takes no write lock, so readers never wait here
        with self._transaction("upgrade") as conn:
            conn.execute(SQL["schema_version_table"])
            row = conn.execute(SQL["schema_version"]).fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"{self.path} was written by a newer outspool (format {version}; this "
                    f"version reads up to {SCHEMA_VERSION}): upgrade outspool to open it"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _statements(SQL[f"migrate_{step}"]):
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                for statement in _statements(SQL["set_schema_version"]):
                    conn.execute(statement, {"version": SCHEMA_VERSION})

    def _current_version(self, conn: sqlite3.Connection) -> int | None:
        with self._errors("open"):
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outspool_schema'"
            ).fetchone()
            if exists is None:
                return None
            row = conn.execute(SQL["schema_version"]).fetchone()
        return int(row[0]) if row else None

    def schema_version(self) -> int:
        with self._errors("read"):
            row = self._connect().execute(SQL["schema_version"]).fetchone()
        return int(row[0]) if row else 0

    # --- executions ------------------------------------------------------------

    def create(self, new: NewExecution, execution_id: str, created_at: float) -> Execution:
        params = {
            "id": execution_id,
            "name": new.name,
            "status": new.status.value,
            "command": json.dumps(list(new.command)),
            "language": new.language,
            "code": new.code,
            "cwd": new.cwd,
            "env": json.dumps(dict(new.env)) if new.env else None,
            "timeout": new.timeout,
            "pty": int(new.pty),
            "created_at": created_at,
            "worker_id": new.worker_id,
        }
        with self._transaction("write to") as conn:
            conn.execute(SQL["insert_execution"], params)
        return self.get(execution_id)

    def mark_running(
        self, execution_id: str, pid: int | None, started_at: float, worker_id: str | None
    ) -> None:
        with self._transaction("write to") as conn:
            conn.execute(
                SQL["mark_running"],
                {"id": execution_id, "pid": pid, "started_at": started_at, "worker_id": worker_id},
            )

    def write(self, batch: WriteBatch) -> None:
        chunk_rows = [self._chunk_params(c) for c in batch.chunks]  # large blobs: segments first
        totals = [
            {
                "id": u.execution_id,
                "stdout_size": u.stdout_size,
                "stderr_size": u.stderr_size,
                "chunk_count": u.chunk_count,
                "last_output_at": u.last_output_at,
            }
            for u in batch.updates
        ]
        progress = [
            {
                "id": u.execution_id,
                "progress": u.progress.text,
                "progress_percent": u.progress.percent,
            }
            for u in batch.updates
            if u.progress is not None
        ]
        with self._transaction("write to") as conn:
            conn.executemany(SQL["insert_chunk"], chunk_rows)
            conn.executemany(SQL["record_output"], totals)
            if progress:
                conn.executemany(SQL["record_progress"], progress)

    def finish(
        self,
        execution_id: str,
        outcome: Outcome,
        finished_at: float,
        inline: tuple[bytes, bytes] | None,
    ) -> bool:
        self.segments.release(execution_id)
        params: dict[str, Any] = {
            "id": execution_id,
            "status": outcome.status.value,
            "exit_code": outcome.exit_code,
            "signal": outcome.signal,
            "reason": outcome.reason,
            "finished_at": finished_at,
            "output_truncated": int(inline is None),
            "stdout": inline[0] if inline else None,
            "stderr": inline[1] if inline else None,
        }
        with self._transaction("write to") as conn:
            return conn.execute(SQL["finish_execution"], params).rowcount == 1

    def get(self, execution_id: str) -> Execution:
        conn = self._connect()
        with self._errors("read"):
            row = conn.execute(SQL["get_execution"], {"id": execution_id}).fetchone()
            if row is None and execution_id:
                ids = conn.execute(SQL["find_by_prefix"], {"prefix": execution_id}).fetchall()
                if len(ids) == 1:
                    row = conn.execute(SQL["get_execution"], {"id": ids[0][0]}).fetchone()
        if row is None:
            raise NotFoundError(f"no execution {execution_id!r} in {self.path}")
        return Execution.from_row(row)

    def list_executions(
        self, status: Status | None = None, limit: int = 50, before: str | None = None
    ) -> list[Execution]:
        params = {"status": status.value if status else None, "limit": limit, "before": before}
        with self._errors("read"):
            rows = self._connect().execute(SQL["list_executions"], params).fetchall()
        return [Execution.from_row(r) for r in rows]

    # --- output ----------------------------------------------------------------

    def chunks_after(self, execution_id: str, after: int, limit: int) -> list[ChunkRecord]:
        params = {"id": execution_id, "after": after, "limit": limit}
        with self._errors("read"):
            rows = self._connect().execute(SQL["chunks_after"], params).fetchall()
        return [self._record(r) for r in rows]

    def chunks_before(self, execution_id: str, before: int, limit: int) -> list[ChunkRecord]:
        params = {"id": execution_id, "before": before, "limit": limit}
        with self._errors("read"):
            rows = self._connect().execute(SQL["chunks_before"], params).fetchall()
        return [self._record(r) for r in rows]

    def _chunk_params(self, c: ChunkRecord) -> dict[str, Any]:
        params = _chunk_params(c)
        out, err = c.stdout or b"", c.stderr or b""
        if len(out) + len(err) >= segments.THRESHOLD:
            where = self.segments.append(c.execution_id, out, err)
            params.update(
                stdout=None,
                stderr=None,
                blob_offset=where.offset,
                blob_stdout_length=where.stdout_length,
                blob_stderr_length=where.stderr_length,
                blob_crc=where.crc,
            )
        return params

    def _record(self, row: sqlite3.Row) -> ChunkRecord:
        record = ChunkRecord(*tuple(row)[:11])
        if row["blob_offset"] is None:
            return record
        where = segments.Placement(
            row["blob_offset"],
            row["blob_stdout_length"],
            row["blob_stderr_length"],
            row["blob_crc"],
        )
        out, err = self.segments.read(record.execution_id, where)
        return replace(record, stdout=out or None, stderr=err or None)

    def chunk_containing(self, execution_id: str, stream: Stream | None, offset: int) -> int | None:
        name = "chunk_containing_" + (stream.name.lower() if stream else "all")
        with self._errors("read"):
            row = self._connect().execute(SQL[name], {"id": execution_id, "offset": offset})
            found = row.fetchone()[0]
        return None if found is None else int(found)

    def wait(self, execution_id: str, timeout: float) -> None:
        """Poll ``PRAGMA data_version``, which changes when another connection commits."""
        conn = self._connect()
        deadline = time.monotonic() + timeout
        with self._errors("read"):
            start = conn.execute("PRAGMA data_version").fetchone()[0]
            while time.monotonic() < deadline:
                time.sleep(min(self._poll_interval, max(0.0, deadline - time.monotonic())))
                if conn.execute("PRAGMA data_version").fetchone()[0] != start:
                    return

    # --- the queue ---------------------------------------------------------------------

    def claim(self, worker_id: str, now: float) -> Execution | None:
        conn = self._connect()
        with self._errors("read"):
            if conn.execute(SQL["queued_exists"]).fetchone() is None:
                return None  # the common idle case costs a read, not a write lock
        with self._transaction("write to") as conn:
            row = conn.execute(SQL["claim_next"], {"worker_id": worker_id, "now": now}).fetchone()
        return None if row is None else Execution.from_row(row)

    def register_worker(
        self, worker_id: str, hostname: str, pid: int, kind: str, now: float
    ) -> None:
        params = {"id": worker_id, "hostname": hostname, "pid": pid, "kind": kind, "now": now}
        with self._transaction("write to") as conn:
            conn.execute(SQL["register_worker"], params)

    def heartbeat(self, worker_id: str, now: float, stopped: bool = False) -> None:
        query = SQL["unregister_worker" if stopped else "heartbeat"]
        with self._transaction("write to") as conn:
            conn.execute(query, {"id": worker_id, "now": now})

    def cancel(self, execution_id: str, now: float, reason: str) -> Execution:
        ex = self.get(execution_id)
        params = {"id": ex.id, "now": now, "reason": reason}
        with self._transaction("write to") as conn:
            if conn.execute(SQL["cancel_queued"], params).rowcount == 0:
                conn.execute(SQL["request_cancel"], params)
        return self.get(ex.id)

    def cancel_requests(self, worker_id: str) -> list[tuple[str, str | None]]:
        with self._errors("read"):
            rows = self._connect().execute(SQL["cancel_requests"], {"worker_id": worker_id})
            return [(r[0], r[1]) for r in rows.fetchall()]

    def find_lost(self, stale_before: float) -> list[LostExecution]:
        with self._errors("read"):
            rows = self._connect().execute(SQL["find_lost"], {"stale_before": stale_before})
            return [LostExecution(r[0], r[1], r[2], r[3]) for r in rows.fetchall()]

    def mark_lost(self, execution_id: str, now: float, reason: str) -> bool:
        params = {"id": execution_id, "now": now, "reason": reason}
        with self._transaction("write to") as conn:
            return conn.execute(SQL["mark_lost"], params).rowcount == 1


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


def _chunk_params(c: ChunkRecord) -> dict[str, Any]:
    return {
        "execution_id": c.execution_id,
        "chunk_index": c.chunk_index,
        "stdout_offset": c.stdout_offset,
        "stdout_size": c.stdout_size,
        "stderr_offset": c.stderr_offset,
        "stderr_size": c.stderr_size,
        "codec": c.codec,
        "timestamp": c.timestamp,
        "runs": c.runs,
        "stdout": c.stdout,
        "stderr": c.stderr,
        "blob_offset": None,
        "blob_stdout_length": None,
        "blob_stderr_length": None,
        "blob_crc": None,
    }


def _statements(script: str) -> list[str]:
    """Split a block of plain DDL (no semicolons inside literals) into statements."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


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
