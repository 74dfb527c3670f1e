"""The store core: every store verb, written once over the named SQL blocks.

:class:`SqlStore` turns each verb of the :class:`~outspool.store.base.Store`
protocol into named queries of ``sql/<dialect>.sql`` (the same names in both
dialects; each file speaks its own parameter style). A backend subclasses it and
supplies only what really differs: its connection, transaction and reads
(:meth:`_transaction`, :meth:`_statement`, :meth:`_rows`), opening the schema
(:meth:`_schema_cursor`, :meth:`_exclusive`), where chunk payloads live
(:meth:`_chunk_row`, :meth:`_chunks`, :meth:`_finishing`), and how :meth:`wait`
learns of a change. A query's rows are read by column name.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from outspool.checksum import DAMAGED_ROW, seal, verify
from outspool.codec import ChunkRecord
from outspool.errors import NotFoundError, SchemaTooNewError, StoreError, ambiguous
from outspool.jobs import Job
from outspool.labels import as_filter
from outspool.models import Execution, Outcome, Status, Stream
from outspool.store import queries
from outspool.store.base import (
    CHECKSUMS,
    SCHEMA_VERSION,
    Ended,
    Finished,
    LostExecution,
    Started,
    StoreStats,
    WriteBatch,
)

Params = Mapping[str, Any]
#: Chunk rows sealed per statement while migrating (each up to ``max_chunk_size`` of blobs).
SEAL_PAGE = 64
#: Rows read per query while looking for damaged ones (``ls --status damaged``).
DAMAGE_PAGE = 500
#: A chunk as read, and the CRC its blobs were already checked against (None: not yet).
Checked = tuple[ChunkRecord, int | None]


class Cursor(Protocol):
    """What the core asks of a DB-API cursor (``sqlite3`` and ``psycopg`` both fit)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, query: str, params: Params = ..., /) -> object: ...

    def executemany(self, query: str, params: Iterable[Params], /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlStore(abc.ABC):
    """A :class:`~outspool.store.base.Store` over one dialect's named SQL blocks."""

    #: Which ``sql/<dialect>.sql`` file the queries come from.
    dialect: ClassVar[str]
    #: False where a text column cannot hold NUL (PostgreSQL): progress is cleaned first.
    text_holds_nul: ClassVar[bool] = True
    #: zstd level when the setting is unset. -1 (SQLite): a byte stored costs one copy into
    #: a segment file, and -1 skips data that does not shrink at ~14 GB/s.
    compression_level: ClassVar[int] = -1
    #: Look for a queued row (a read) before claiming (a write). SQLite: a claim takes the
    #: file's one write lock even when it finds nothing, so an idle look is a read.
    claim_looks_first: ClassVar[bool] = True

    def __init__(self) -> None:
        self.sql = queries.load(self.dialect)

    def presence(self, lock_timeout: float) -> SqlStore:
        return self

    # --- what a backend supplies -------------------------------------------------------

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human name for messages (no password)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads."""

    @abc.abstractmethod
    def wait(self, execution_id: str, timeout: float) -> None:
        """Return when ``execution_id`` may have changed, or after ``timeout`` seconds."""

    @abc.abstractmethod
    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed()`` whenever ``execution_id`` may have changed (Store.subscribe)."""

    @abc.abstractmethod
    def _transaction(self, doing: str) -> contextlib.AbstractContextManager[Cursor]:
        """A cursor whose statements commit together (or not at all)."""

    def _unread_transaction(self, doing: str) -> contextlib.AbstractContextManager[Cursor]:
        """A :meth:`_transaction` none of whose results is read before it ends (a backend
        may then send all its statements at once)."""
        return self._transaction(doing)

    @abc.abstractmethod
    def _statement(self, doing: str) -> contextlib.AbstractContextManager[Cursor]:
        """A cursor for one writing statement, committed on its own."""

    @abc.abstractmethod
    def _rows(self, name: str, params: Params) -> list[Any]:
        """All rows of the read query ``name``, addressable by column name."""

    @abc.abstractmethod
    def _chunks(self, name: str, params: Params) -> list[Checked]:
        """Chunk records of the read query ``name``, their payloads fetched, each with the
        CRC its blobs were already checked against (None: not yet), for :func:`verify`."""

    @abc.abstractmethod
    def _schema_cursor(self, create: bool) -> contextlib.AbstractContextManager[Cursor]:
        """A cursor for opening the schema; ``create=False`` creates nothing."""

    @abc.abstractmethod
    def _exclusive(self, cur: Cursor) -> contextlib.AbstractContextManager[None]:
        """Hold the schema against concurrent openers while it is upgraded."""

    def _chunk_row(self, c: ChunkRecord) -> dict[str, Any]:
        """The ``insert_chunk`` parameters of one chunk (a backend may store blobs elsewhere)."""
        return chunk_row(c)

    @abc.abstractmethod
    def _finishing(self, execution_id: str) -> None:
        """Called before an execution's end is recorded: no more chunks will come."""

    @abc.abstractmethod
    def _removed(self, files: Mapping[str, list[str]]) -> None:
        """After a commit deleted trimmed chunks: their files (``execution id -> blob_file``
        names), where chunk payloads live outside the rows."""

    @abc.abstractmethod
    def _deleted(self, files: Mapping[str, list[str]]) -> None:
        """After a commit deleted whole executions (``execution id -> blob_file`` names)."""

    @abc.abstractmethod
    def reclaim(self) -> None:
        """Give the space of deleted rows back to the filesystem where the backend can."""

    # --- schema ------------------------------------------------------------------------

    def migrate(self, create: bool = True) -> None:
        """Create or upgrade the schema; refuse a database newer than this code.

        With ``create=False`` a store that does not exist yet is a StoreError and
        nothing is created (an existing older one is still upgraded).
        """
        with self._schema_cursor(create) as cur:
            version = self._installed_version(cur)
            if version is None and not create:
                raise self._missing()
            if version == SCHEMA_VERSION:
                return  # the common case takes no lock, so readers never wait here
            with self._exclusive(cur):
                self._upgrade(cur)

    def _missing(self) -> StoreError:
        """The error for a store that does not exist (and was not to be created)."""
        hint = "nothing stored there yet; check --db or OUTSPOOL_DB"
        return StoreError(f"no database at {self.describe()} ({hint})")

    def _installed_version(self, cur: Cursor) -> int | None:
        cur.execute(self.sql["schema_exists"])
        if cur.fetchone() is None:
            return None
        cur.execute(self.sql["schema_version"])
        row = cur.fetchone()
        return None if row is None else int(row["version"])

    def _upgrade(self, cur: Cursor) -> None:
        for statement in statements(self.sql["schema_version_table"]):
            cur.execute(statement)
        cur.execute(self.sql["schema_version"])
        row = cur.fetchone()
        version = int(row["version"]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{self.describe()} was written by a newer outspool (format {version}; this "
                f"version reads up to {SCHEMA_VERSION}): upgrade outspool to open it"
            )
        if version == SCHEMA_VERSION:
            return
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in statements(self.sql[f"migrate_{step}"]):
                cur.execute(statement)
        if version < CHECKSUMS:
            self._seal_chunks(cur)
        for statement in statements(self.sql["set_schema_version"]):
            cur.execute(statement, {"version": SCHEMA_VERSION})

    def _seal_chunks(self, cur: Cursor) -> None:
        """Give every chunk row of an older format its checksum, a page at a time (in the
        migration's transaction). Blobs in segment files are not read: their ``blob_crc``
        stands for them. A row whose columns cannot be hashed keeps none, and reads as
        damaged."""
        after: dict[str, Any] = {"execution_id": "", "chunk_index": -1, "limit": SEAL_PAGE}
        while rows := self._query(cur, "unsealed_chunks", after):
            sealed = [
                {"execution_id": r["execution_id"], "chunk_index": r["chunk_index"], "sum": s}
                for r in rows
                if (s := _seal_row(r)) is not None
            ]
            if sealed:
                cur.executemany(self.sql["seal_chunk"], sealed)
            after |= {
                "execution_id": rows[-1]["execution_id"],
                "chunk_index": rows[-1]["chunk_index"],
            }

    # --- executions --------------------------------------------------------------------

    def create(
        self,
        job: Job,
        execution_id: str,
        created_at: float,
        status: Status = Status.RUNNING,
        worker_id: str | None = None,
    ) -> Execution:
        row = execution_row(job, execution_id, created_at, status, worker_id)
        labels = [{"id": execution_id, "key": k, "value": v} for k, v in job.labels.items()]
        with self._transaction("write to") as cur:
            cur.execute(self.sql["insert_execution"], row)
            if labels:
                cur.executemany(self.sql["insert_label"], labels)
        return self.get(execution_id)

    def mark_running(
        self, execution_id: str, pid: int | None, started_at: float, worker_id: str | None
    ) -> None:
        params = _started_row(Started(execution_id, pid, started_at, worker_id))
        with self._statement("write to") as cur:
            cur.execute(self.sql["mark_running"], params)

    def write(self, batch: WriteBatch) -> None:
        chunk_rows = [self._chunk_row(c) for c in batch.chunks]  # payloads placed first
        totals = [
            {
                "id": u.execution_id,
                "stdout_size": u.stdout_size,
                "stderr_size": u.stderr_size,
                "chunk_count": u.chunk_count,
                "last_output_at": u.last_output_at,
                "stdout_dropped": u.stdout_dropped,
                "stderr_dropped": u.stderr_dropped,
            }
            for u in batch.updates
        ]
        progress = [
            {
                "id": u.execution_id,
                "progress": self._text(u.progress.text),
                "progress_percent": u.progress.percent,
            }
            for u in batch.updates
            if u.progress is not None
        ]
        started = [_started_row(s) for s in batch.started]
        ended = [_ended_row(e) for e in batch.ended]
        files: dict[str, list[str]] = {}
        begin = self._transaction if batch.trims else self._unread_transaction
        with begin("write to") as cur:
            if started:  # before any output: a reader never sees output of a program not started
                cur.executemany(self.sql["mark_running"], started)
            for execution_id, index in batch.trims:  # a tail window slid: first, so that a
                params = {"execution_id": execution_id, "chunk_index": index}  # cut can replace
                cur.execute(self.sql["delete_chunk"], params)
                row = cur.fetchone()
                if row is not None and row["blob_file"] is not None:
                    files.setdefault(execution_id, []).append(row["blob_file"])
            for name, rows in (
                ("insert_chunk", chunk_rows),
                ("record_output", totals),
                ("record_progress", progress),
            ):
                if rows:
                    cur.executemany(self.sql[name], rows)
            if ended:  # after all the output: an ended execution's output is complete
                cur.executemany(self.sql["finish_execution"], ended)
        if files:
            self._removed(files)  # after the commit: a failed one keeps them
        for end in batch.ended:  # no chunk will come: its payload file can be closed
            self._finishing(end.execution_id)

    def finish(
        self,
        execution_id: str,
        outcome: Outcome,
        finished_at: float,
        inline: tuple[bytes, bytes] | None,
    ) -> bool:
        self._finishing(execution_id)
        params = _ended_row(Ended(execution_id, outcome, finished_at, inline))
        return self._changed("finish_execution", params)

    def get(self, execution_id: str) -> Execution:
        rows = self._rows("get_execution", {"id": execution_id})
        ids: list[str] = []
        if not rows and execution_id:
            ids = [r["id"] for r in self._rows("find_by_prefix", {"prefix": execution_id})]
            if len(ids) == 1:
                rows = self._rows("get_execution", {"id": ids[0]})
        if not rows and execution_id:
            rows = self._rows("newest_by_name", {"name": execution_id})
        if not rows and len(ids) > 1:
            raise ambiguous(execution_id, ids)
        if not rows:
            raise NotFoundError(f"no execution {execution_id!r} in {self.describe()}")
        return Execution.from_row(rows[0])

    def list_executions(
        self,
        status: Status | None = None,
        limit: int = 50,
        before: str | None = None,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
    ) -> list[Execution]:
        if status is Status.DAMAGED:
            return self._damaged(limit, before, name=name, labels=labels, since=since)
        params = {
            "status": status.value if status else None,
            "limit": limit,
            "before": before,
            "name": name,
            "labels": as_filter(labels),
            "since": since,
        }
        return [
            Execution.from_row(r)
            for r in self._rows(
                _list_query(status, bool(name or labels or since is not None)), params
            )
        ]

    def _damaged(self, limit: int, before: str | None, **filters: Any) -> list[Execution]:
        """Damaged rows, newest first. No row stores that status: a row is damaged when it
        does not read whole, so every row is read, a page at a time (damage is rare)."""
        found: list[Execution] = []
        while len(found) < limit:
            page = self.list_executions(None, DAMAGE_PAGE, before, **filters)
            found += [ex for ex in page if ex.status is Status.DAMAGED]
            if len(page) < DAMAGE_PAGE:
                break
            before = page[-1].id
        return found[:limit]

    def stats(self) -> StoreStats:
        counts: dict[Status, int] = {}
        sizes: dict[Status, int] = {}
        for r in self._rows("execution_counts", {}):
            status = _status(r["status"])  # an unknown one: a damaged row
            counts[status] = counts.get(status, 0) + int(r["executions"])
            sizes[status] = sizes.get(status, 0) + int(r["bytes"] or 0)
        stored = self._rows("stored_bytes", {})[0]["stored"]
        return StoreStats(counts, sizes, int(stored or 0))

    # --- output ------------------------------------------------------------------------

    def chunks_after(self, execution_id: str, after: int, limit: int) -> list[ChunkRecord]:
        params = {"id": execution_id, "after": after, "limit": limit}
        return [verify(r, crc) for r, crc in self._chunks("chunks_after", params)]

    def chunks_before(self, execution_id: str, before: int, limit: int) -> list[ChunkRecord]:
        params = {"id": execution_id, "before": before, "limit": limit}
        return [verify(r, crc) for r, crc in self._chunks("chunks_before", params)]

    def chunk_containing(self, execution_id: str, stream: Stream | None, offset: int) -> int | None:
        name = "chunk_containing_" + (stream.name.lower() if stream else "all")
        found = self._rows(name, {"id": execution_id, "offset": offset})[0]["found"]
        return None if found is None else int(found)

    def offsets_before(self, execution_id: str, when: float) -> tuple[int, int] | None:
        rows = self._rows("chunk_before_time", {"id": execution_id, "when": when})
        return (int(rows[0]["stdout_offset"]), int(rows[0]["stderr_offset"])) if rows else None

    # --- deleting ----------------------------------------------------------------------

    def delete(self, execution_ids: Sequence[str]) -> list[str]:
        gone: dict[str, list[str]] = {}
        with self._transaction("write to") as cur:
            for execution_id in execution_ids:
                params = {"id": execution_id}
                files = [r["blob_file"] for r in self._query(cur, "chunk_files", params)]
                if self._query(cur, "delete_execution", params):
                    gone[execution_id] = files
        if gone:
            self._deleted(gone)
        return list(gone)

    def prunable(
        self,
        after: tuple[float, str],
        upto: tuple[float, str],
        statuses: Sequence[Status],
        excess: int | None,
        limit: int,
    ) -> list[Finished]:
        params = {
            "after_ended": after[0],
            "after_id": after[1],
            "upto_ended": upto[0],
            "upto_id": upto[1],
            "statuses": json.dumps(sorted(s.value for s in statuses)) if statuses else None,
            "excess": excess,
            "limit": limit,
        }
        rows = self._rows("prune_batch", params)
        return [Finished(r["id"], Status(r["status"]), r["ended_at"], r["kept"]) for r in rows]

    def keep_from(self, keep_last: int) -> tuple[float, str] | None:
        rows = self._rows("prune_keep_from", {"offset": keep_last - 1})
        return (float(rows[0]["ended_at"]), str(rows[0]["id"])) if rows else None

    def stored_output(self) -> int:
        return int(self._rows("stored_output", {})[0]["kept"])

    # --- the queue ---------------------------------------------------------------------

    def claim(self, worker_id: str, now: float) -> Execution | None:
        claimed = self.claim_many(worker_id, now, 1)
        return claimed[0] if claimed else None

    def claim_many(self, worker_id: str, now: float, limit: int) -> list[Execution]:
        if limit < 1 or (self.claim_looks_first and not self._rows("queued_exists", {})):
            return []  # the common idle case costs a read, not a write lock
        params = {"worker_id": worker_id, "now": now, "limit": limit}
        with self._statement("write to") as cur:
            cur.execute(self.sql["claim_next"], params)
            rows = cur.fetchall()
        claimed = [Execution.from_row(row) for row in rows]
        return sorted(claimed, key=lambda ex: (ex.created_at, ex.id))

    def register_worker(
        self,
        worker_id: str,
        hostname: str,
        pid: int,
        kind: str,
        now: float,
        *,
        process: str | None = None,
    ) -> None:
        params = {"id": worker_id, "hostname": hostname, "pid": pid, "kind": kind, "now": now}
        self._changed("register_worker", {**params, "process": process})

    def worker_process(self, worker_id: str) -> str | None:
        rows = self._rows("worker_process", {"id": worker_id})
        return rows[0]["process"] if rows else None

    def restore_lost(self, worker_id: str) -> int:
        if not self._rows("any_lost", {"id": worker_id}):  # a read: no lock to wait for
            return 0
        with self._statement("write to") as cur:
            cur.execute(self.sql["restore_lost"], {"id": worker_id})
            return max(cur.rowcount, 0)

    def heartbeat(self, worker_id: str, now: float, stopped: bool = False) -> None:
        name = "unregister_worker" if stopped else "heartbeat"
        self._changed(name, {"id": worker_id, "now": now})

    def cancel(self, execution_id: str, now: float, reason: str) -> Execution:
        ex = self.get(execution_id)
        params = {"id": ex.id, "now": now, "reason": reason}
        with self._transaction("write to") as cur:
            cur.execute(self.sql["cancel_queued"], params)
            if cur.rowcount == 0:
                cur.execute(self.sql["request_cancel"], params)
        return self.get(ex.id)

    def cancel_requests(self, worker_id: str) -> list[tuple[str, str | None]]:
        rows = self._rows("cancel_requests", {"worker_id": worker_id})
        return [(r["id"], r["reason"]) for r in rows]

    def find_lost(self, stale_before: float) -> list[LostExecution]:
        rows = self._rows("find_lost", {"stale_before": stale_before})
        return [
            LostExecution(r["id"], r["pid"], r["worker_id"], r["hostname"], r["process"])
            for r in rows
        ]

    def mark_lost(self, execution_id: str, now: float, reason: str) -> bool:
        return self._changed("mark_lost", {"id": execution_id, "now": now, "reason": reason})

    # --- helpers -----------------------------------------------------------------------

    def _query(self, cur: Cursor, name: str, params: Params) -> list[Any]:
        """All rows of query ``name`` run on ``cur`` (inside a transaction)."""
        cur.execute(self.sql[name], params)
        return list(cur.fetchall())

    def _changed(self, name: str, params: Params) -> bool:
        """Run one writing statement; True if it changed exactly one row."""
        with self._statement("write to") as cur:
            cur.execute(self.sql[name], params)
            return cur.rowcount == 1

    def _text(self, value: str) -> str:
        """``value`` fit for a text column of this backend."""
        return value if self.text_holds_nul else value.replace("\x00", "\ufffd")


class Subscribers:
    """Each execution's subscribers (:meth:`Store.subscribe`), for the thread calling them."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock  # the owner's, held while it reads ``of``
        self.of: dict[str, list[Callable[[], None]]] = {}

    def add(
        self, execution_id: str, changed: Callable[[], None], gone: Callable[[str], object]
    ) -> Callable[[], None]:
        """Subscribe ``changed``; the function returned cancels it (``gone(execution_id)``
        after the last subscriber of that execution left)."""
        with self.lock:
            self.of.setdefault(execution_id, []).append(changed)

        def cancel() -> None:
            with self.lock:
                mine = self.of.get(execution_id, [])
                if changed in mine:
                    mine.remove(changed)
                if not mine:
                    self.of.pop(execution_id, None)
                    gone(execution_id)

        return cancel


def execution_row(
    job: Job, execution_id: str, created_at: float, status: Status, worker_id: str | None
) -> dict[str, Any]:
    """The ``insert_execution`` parameters: the one place a job becomes a row.

    ``job.command`` is stored as given: the caller resolves a language first
    (:func:`outspool.queue.create`). ``worker_id`` is set when the creating
    process runs it at once.
    """
    return {
        "id": execution_id,
        "name": job.name,
        "status": status.value,
        "command": json.dumps(list(job.command)),
        "language": job.language,
        "code": job.code,
        "cwd": job.cwd,
        "env": json.dumps(dict(job.env)) if job.env else None,
        "timeout": job.timeout,
        "pty": job.pty,
        "created_at": created_at,
        "worker_id": worker_id,
        "cpu_time": job.cpu_time,
        "memory": job.memory,
        "max_processes": job.max_processes,
        "max_file_size": job.max_file_size,
        "network": job.network,
        "secrets": json.dumps(dict(job.secrets)) if job.secrets else None,
        "labels": json.dumps(dict(job.labels)) if job.labels else None,
        "max_output": job.max_output,
    }


def _started_row(start: Started) -> dict[str, Any]:
    """The ``mark_running`` parameters of one start."""
    return {
        "id": start.execution_id,
        "pid": start.pid,
        "started_at": start.started_at,
        "worker_id": start.worker_id,
    }


def _ended_row(end: Ended) -> dict[str, Any]:
    """The ``finish_execution`` parameters of one ending."""
    outcome, inline = end.outcome, end.inline
    return {
        "id": end.execution_id,
        "status": outcome.status.value,
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "reason": outcome.reason,
        "finished_at": end.finished_at,
        "output_truncated": inline is None,
        "stdout": inline[0] if inline else None,
        "stderr": inline[1] if inline else None,
    }


def chunk_row(c: ChunkRecord) -> dict[str, Any]:
    """The ``insert_chunk`` parameters every backend has, blobs in the row."""
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
        "line_times": c.line_times,
        "checksum": c.checksum,
    }


def _seal_row(row: Any) -> int | None:
    """The checksum of an unsealed chunk row (``unsealed_chunks``); None if it is damaged."""
    fields = [f.name for f in dataclasses.fields(ChunkRecord)][:12]
    record = ChunkRecord(*(row[name] for name in fields))
    try:
        if row["blob_crc"] is None:
            return seal(record)
        lengths = (int(row["blob_stdout_length"]), int(row["blob_stderr_length"]))
        return seal(record, int(row["blob_crc"]), lengths)
    except DAMAGED_ROW:
        return None


def statements(script: str) -> list[str]:
    """Split a block of plain DDL (no semicolons inside literals) into statements."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.DAMAGED


def _list_query(status: Status | None, filtered: bool = False) -> str:
    """The named query that pages executions (by status: its own index, one page read;
    by name, labels or time: the filtered one)."""
    if filtered:
        return "list_executions_filtered"
    return "list_executions" if status is None else "list_executions_by_status"
