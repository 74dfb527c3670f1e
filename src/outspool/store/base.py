"""The storage interface: a narrow protocol in storage terms, and the values it moves.

A store moves rows; it knows nothing of processes, buffers or codecs. The
writer hands it encoded :class:`~outspool.codec.ChunkRecord` batches, readers
get them back and decode them (``outspool.follow``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from outspool.codec import ChunkRecord
from outspool.jobs import Job
from outspool.models import Execution, Outcome, Status, Stream
from outspool.progress import Progress

#: The storage format version this code writes. Older databases are upgraded on open.
SCHEMA_VERSION = 10
#: The format whose migration added chunk checksums: older rows are sealed after it.
CHECKSUMS = 8


#: The key :meth:`Store.wait` is woken on when an execution is queued (never an ID).
QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class LostExecution:
    """A running execution whose capturing process stopped heartbeating."""

    execution_id: str
    pid: int | None
    worker_id: str | None
    hostname: str | None
    process: str | None = None  #: the capturing process's identity (:mod:`outspool.liveness`)


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished execution as prune sees it: when it ended and the output bytes it keeps."""

    execution_id: str
    status: Status
    ended_at: float
    kept: int


@dataclass(frozen=True, slots=True)
class OutputUpdate:
    """The ``executions`` columns a commit of output changes."""

    execution_id: str
    stdout_size: int
    stderr_size: int
    chunk_count: int
    last_output_at: float
    progress: Progress | None = None
    stdout_dropped: int = 0
    stderr_dropped: int = 0


@dataclass(frozen=True, slots=True)
class Started:
    """A program that started: the ``executions`` columns :meth:`Store.mark_running` sets."""

    execution_id: str
    pid: int | None
    started_at: float
    worker_id: str | None


@dataclass(frozen=True, slots=True)
class Ended:
    """An execution's end, as :meth:`Store.finish` records it."""

    execution_id: str
    outcome: Outcome
    finished_at: float
    inline: tuple[bytes, bytes] | None  #: the whole output when small, else None


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Everything one group commit writes: programs that started, new chunks of any
    executions and their totals, then executions that ended, in that order."""

    chunks: list[ChunkRecord]
    updates: list[OutputUpdate]
    #: ``(execution_id, chunk_index)`` of chunks to delete first (a tail window sliding).
    trims: list[tuple[str, int]] = field(default_factory=list)
    started: list[Started] = field(default_factory=list)  #: recorded before any output
    ended: list[Ended] = field(default_factory=list)  #: recorded after all output


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Totals for monitoring (``GET /metrics``)."""

    executions: Mapping[Status, int]  #: how many executions are in each status
    captured_bytes: Mapping[Status, int]  #: bytes they printed, by status
    stored_bytes: int  #: bytes their chunks take as stored (after compression)


class Store(Protocol):
    """What outspool needs of a database (``open_store`` returns one, opened and migrated).

    Both backends implement every verb once, in ``store/core.py``. Where they differ
    it shows in behaviour, not in the interface: :meth:`wait` is woken by the
    database on PostgreSQL (LISTEN/NOTIFY) and polls every ``poll_interval`` on SQLite.
    """

    def describe(self) -> str:
        """A short human name for messages (a password is never echoed)."""
        ...

    @property
    def compression_level(self) -> int:
        """The zstd level chunks are stored at when the ``compression_level`` setting is
        unset: what costs least here, the compressor's CPU or the bytes stored."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def presence(self, lock_timeout: float) -> Store:
        """The store for a heartbeat thread (close it when it is not this one): on
        PostgreSQL on a connection of its own, on which a statement waits at most
        ``lock_timeout`` seconds for a lock, so a stalled write path cannot delay the
        heartbeat; on SQLite this store, whose one write lock every writer shares
        (liveness on the capturing process's host does not hang on the heartbeat)."""
        ...

    def create(
        self,
        job: Job,
        execution_id: str,
        created_at: float,
        status: Status = Status.RUNNING,
        worker_id: str | None = None,
    ) -> Execution:
        """Insert a new execution of ``job`` (its ``command`` as it will run)."""
        ...

    def mark_running(
        self, execution_id: str, pid: int | None, started_at: float, worker_id: str | None
    ) -> None:
        """Record that the program started."""
        ...

    def write(self, batch: WriteBatch) -> None:
        """Record starts, append chunks, update totals, record ends: one transaction."""
        ...

    def finish(
        self,
        execution_id: str,
        outcome: Outcome,
        finished_at: float,
        inline: tuple[bytes, bytes] | None,
    ) -> bool:
        """Record the ending (once); ``inline`` is the whole output when small. False if ended."""
        ...

    def get(self, execution_id: str) -> Execution:
        """One execution by exact ID or unique prefix, else the newest with that name;
        NotFoundError otherwise (AmbiguousError for a prefix of several IDs)."""
        ...

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
        """Executions, newest first; ``before`` is the ID the previous page ended on.

        Only those with this ``name``, all these ``labels``, created at or after ``since``.
        """
        ...

    def chunks_after(self, execution_id: str, after: int, limit: int) -> list[ChunkRecord]:
        """Chunks with ``chunk_index > after``, in order."""
        ...

    def chunks_before(self, execution_id: str, before: int, limit: int) -> list[ChunkRecord]:
        """Chunks with ``chunk_index < before``, newest first (for tails)."""
        ...

    def chunk_containing(self, execution_id: str, stream: Stream | None, offset: int) -> int | None:
        """Index of the chunk holding byte ``offset`` of a stream (None: of ``all``)."""
        ...

    def offsets_before(self, execution_id: str, when: float) -> tuple[int, int] | None:
        """``(stdout_offset, stderr_offset)`` of the last chunk whose first read came before
        ``when`` (epoch seconds): output read at or after ``when`` starts no earlier."""
        ...

    def wait(self, execution_id: str, timeout: float) -> None:
        """Return when ``execution_id`` may have changed, or after ``timeout`` seconds.

        PostgreSQL: woken by a notification of the change. SQLite: polls the file's
        ``data_version`` every ``poll_interval``, so any commit to the file wakes it.
        """
        ...

    def subscribe(self, execution_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        """Call ``changed()`` whenever ``execution_id`` may have changed, until the returned
        function is called; a call may be spurious.

        ``changed`` runs on the store's one thread that serves every subscription, so it
        must be quick and must not raise (a server sets an event of its loop). PostgreSQL:
        the LISTEN connection of :meth:`wait` calls the subscribers of the notified
        execution. SQLite: one poller per store reads ``data_version`` every
        ``poll_interval``; after a commit it reads the subscribed executions' rows in one
        query and calls only the subscribers of those whose row changed.
        """
        ...

    def stats(self) -> StoreStats:
        """Totals for monitoring; a full scan of the chunk rows' sizes."""
        ...

    # --- deleting ------------------------------------------------------------------------

    def delete(self, execution_ids: Sequence[str]) -> list[str]:
        """Delete finished executions and all their output in one transaction; those deleted.

        Queued and running ones are left alone (a claim may have raced the caller).
        """
        ...

    def prunable(
        self,
        after: tuple[float, str],
        upto: tuple[float, str],
        statuses: Sequence[Status],
        excess: int | None,
        limit: int,
    ) -> list[Finished]:
        """The next victims of a prune, chosen in the database, oldest end first.

        Finished executions whose ``(ended_at, id)`` lies strictly between ``after``
        and ``upto``, of ``statuses`` (empty: any), at most ``limit``; with
        ``excess``, only the oldest of those whose kept bytes first reach it.
        """
        ...

    def keep_from(self, keep_last: int) -> tuple[float, str] | None:
        """``(ended_at, id)`` of the ``keep_last``-th newest finished execution (it and the
        later ones stay); None when fewer have finished."""
        ...

    def stored_output(self) -> int:
        """Output bytes kept by all executions (uncompressed)."""
        ...

    def reclaim(self) -> None:
        """Give the space of deleted rows back to the filesystem where the backend can."""
        ...

    # --- the queue ---------------------------------------------------------------------

    def claim(self, worker_id: str, now: float) -> Execution | None:
        """Atomically take the oldest queued execution for ``worker_id`` (exactly once)."""
        ...

    def claim_many(self, worker_id: str, now: float, limit: int) -> list[Execution]:
        """:meth:`claim` up to ``limit`` executions in one statement, oldest first."""
        ...

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
        """Record a capturing process (a worker, or ``outspool run``), its identity
        (:func:`outspool.liveness.identity`) and its first heartbeat."""
        ...

    def worker_process(self, worker_id: str) -> str | None:
        """The identity a capturing process registered with (None: unknown)."""
        ...

    def restore_lost(self, worker_id: str) -> int:
        """Put back to ``running`` the executions of ``worker_id`` marked ``lost``."""
        ...

    def heartbeat(self, worker_id: str, now: float, stopped: bool = False) -> None:
        """Refresh a process's heartbeat (``stopped``: it ended cleanly)."""
        ...

    def cancel(self, execution_id: str, now: float, reason: str) -> Execution:
        """End a queued execution now, or ask the process running it to stop it."""
        ...

    def cancel_requests(self, worker_id: str) -> list[tuple[str, str | None]]:
        """Running executions of ``worker_id`` whose cancellation was requested."""
        ...

    def find_lost(self, stale_before: float) -> list[LostExecution]:
        """Running executions whose process stopped heartbeating before ``stale_before``."""
        ...

    def mark_lost(self, execution_id: str, now: float, reason: str) -> bool:
        """End a running execution as ``lost``, keeping its output; False if it had ended."""
        ...
