"""The library's front door: :class:`Outspool` runs programs and reads what they printed.

Synchronous at the core; every blocking call has an ``a``-prefixed async face
that runs it in a thread (one core, not sync and async twins)::

    with Outspool("runs.db") as spool:
        ex = spool.run(["python", "-c", "print('hi')"])
        spool.read(ex.id)            # b'hi\\n'

The CLI and the web server use nothing else (and :class:`~outspool.worker.Worker`).
Leaving the ``with`` block (or :meth:`Outspool.close`) waits for the programs
this process started, like ``subprocess.Popen``; left by an exception, it
stops them (``cancelled``) instead. Either way their output and ending are stored.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Unpack

from outspool import prune, queue
from outspool.errors import ConfigError, StoreError
from outspool.follow import (
    Follower,
    Gap,
    Range,
    check,
    iter_output,
    iter_pieces,
    read_all,
    read_range,
    tail,
    wait_for,
)
from outspool.follow import to_thread as _to_thread
from outspool.heartbeat import Heartbeat
from outspool.isolation import Isolation
from outspool.jobs import Command, Job, JobOptions, as_command, new_id
from outspool.lines import Line, iter_lines, line_starts, since_start
from outspool.models import Execution, Outcome, Status, Stream
from outspool.pieces import PieceRange, line_boundary, read_pieces
from outspool.prune import Pruned
from outspool.runner import Execute, check_runnable, program_env
from outspool.sandbox import Sandbox
from outspool.sandbox import problem as sandbox_problem
from outspool.search import Match, Window, search
from outspool.settings import Settings
from outspool.store import Store, open_store
from outspool.watch import Selector, Watch
from outspool.writer import Writer


def job_of(command: Command | Job, options: JobOptions) -> Job:
    """The job ``start``/``submit`` were given: a :class:`Job`, or a command and options."""
    if isinstance(command, Job):
        return replace(command, **options) if options else command
    return Job(command=as_command(command), **options)


#: Threads that start executions (spawn, which waits for the program's exec) and end them
#: (reap the program, wait for the end's commit), per Outspool. Between the two a program
#: is only read by the capture loop, so a thousand live executions hold no thread each.
HANDLERS = 16


class Running:
    """A handle on an execution running in this process (see :meth:`Outspool.start`)."""

    def __init__(
        self, spool: Outspool, execute: Execute, on_end: Callable[[Running], None]
    ) -> None:
        self._spool = spool
        self._execute = execute
        self._on_end = on_end
        self.id = execute.execution.id
        self.error: BaseException | None = None
        self._done = threading.Event()

    def start(self) -> None:
        """Spawn the program (on one of the :data:`HANDLERS` threads) and hand it to the
        capture loop; returns at once.

        A program that cannot start ends ``failed`` (recorded; the error is kept in
        :attr:`error` and raised by :meth:`wait`).
        """
        self._spool.handle_later(self._begin)

    def _begin(self) -> None:
        try:
            self._execute.begin(self._captured)
        except BaseException as exc:
            self.error = exc
            self._end()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the execution has ended and its end is stored; True once it has."""
        return self._done.wait(timeout)

    def _captured(self) -> None:
        """On the capture loop's thread (which must not wait): the program ended."""
        self._spool.handle_later(self._complete)

    def _complete(self) -> None:
        try:
            self._execute.complete()
        except BaseException as exc:
            self.error = exc
        finally:
            self._end()

    def _end(self) -> None:
        try:
            self._on_end(self)
        finally:
            self._done.set()

    def status(self) -> Status:
        return self.execution().status

    @property
    def outcome(self) -> Outcome | None:
        """How it ended, from memory; None until known."""
        return self._execute.outcome

    @property
    def duration(self) -> float | None:
        """Seconds from the program's start to its outcome, once both are known."""
        execute = self._execute
        if execute.started_at is None or execute.finished_at is None:
            return None
        return max(0.0, execute.finished_at - execute.started_at)

    def execution(self) -> Execution:
        return self._spool.get(self.id)

    def wait(self, timeout: float | None = None) -> Execution:
        """Block until the execution has ended and is stored; its final record."""
        if not self.join(timeout):
            raise TimeoutError(f"execution {self.id} still running after {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.execution()

    def cancel(self, reason: str = "cancelled", force: bool = False) -> None:
        """Stop the program's process group (``force``: SIGKILL now); it ends ``cancelled``."""
        self._execute.stop(Status.CANCELLED, reason, force)

    def recent_lines(self) -> list[bytes]:
        """The most recent lines, from memory (no database read)."""
        sink = self._execute.sink
        return sink.monitor.recent() if sink else []

    def output(self, stream: Stream | None = None) -> bytes:
        return self._spool.read(self.id, stream)

    def follow(self, stream: Stream | None = None) -> Follower:
        return self._spool.follow(self.id, stream)


class Outspool:
    """A store plus this process's writer. Construct, then ``open()`` (or use ``with``).

    ``kind`` names this process in the ``workers`` table (``run`` or ``worker``).
    ``create=False`` opens only an existing store (a missing one is a StoreError, and
    nothing is created): for readers.
    """

    def __init__(
        self,
        db: str | None = None,
        settings: Settings | None = None,
        kind: str = "run",
        *,
        create: bool = True,
    ) -> None:
        self.settings = settings or Settings.load()
        self.db = db
        self.kind = kind
        self.create = create
        self.worker_id = new_id()
        self._store: Store | None = None
        self._writer: Writer | None = None
        self._heartbeat: Heartbeat | None = None
        self._running: dict[str, Running] = {}
        self._handlers: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> Outspool:
        if self._store is None:
            self._store = open_store(self.db, self.settings, create=self.create)
        return self

    def close(self) -> None:
        """Wait for the programs started here to end, commit all output, release the store.

        Interrupted while waiting (Ctrl-C), it stops them instead, records that,
        and re-raises.
        """
        try:
            self._join_running()
        except BaseException as exc:
            self.stop_all(f"stopped: close() was interrupted by {type(exc).__name__}")
            raise
        finally:
            self._release()

    def stop_all(self, reason: str) -> None:
        """Stop every program started here (``cancelled`` with ``reason``); return once
        their endings are stored."""
        with self._lock:
            handles = list(self._running.values())
        for handle in handles:
            handle.cancel(reason)
        for handle in handles:
            handle.join()

    def _join_running(self) -> None:
        while True:
            with self._lock:
                handle = next(iter(self._running.values()), None)
            if handle is None:
                return
            handle.join()

    def handle_later(self, step: Callable[[], None]) -> None:
        """Run ``step`` (an execution's start or end) on one of the :data:`HANDLERS` threads."""
        with self._lock:
            if self._handlers is None:
                self._handlers = ThreadPoolExecutor(HANDLERS, thread_name_prefix="outspool-run")
            handlers = self._handlers
        try:
            handlers.submit(step)
        except RuntimeError:  # shut down (the interpreter is exiting): a thread of its own
            threading.Thread(target=step, name="outspool-run", daemon=True).start()

    def _release(self) -> None:
        if self._handlers is not None:
            self._handlers.shutdown(wait=False)
            self._handlers = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Outspool:
        return self.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Wait for running programs; left by an exception, stop them first."""
        if kind is not None:
            try:
                self.stop_all(f"stopped: the with block was left by {kind.__name__}")
            except BaseException:
                self._release()
                raise
        self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("Outspool is not open: call open() or use it in a with block")
        return self._store

    def describe(self) -> str:
        """The store, named for messages (no password)."""
        return self.store.describe()

    @property
    def writer(self) -> Writer:
        """This process's writer, started on first use, with its heartbeat."""
        with self._lock:
            if self._writer is None:
                self._heartbeat = Heartbeat(
                    self.store,
                    self.worker_id,
                    self.kind,
                    self.settings.heartbeat_interval,
                    self._cancel_requested,
                ).start()
                self._writer = Writer(self.store, self.settings).start()
            return self._writer

    @property
    def started_writer(self) -> Writer | None:
        """The writer if this process has started one (nothing is started by asking)."""
        return self._writer

    def _cancel_requested(self, execution_id: str, reason: str | None) -> None:
        with self._lock:
            handle = self._running.get(execution_id)
        if handle is not None:
            handle.cancel(reason or "cancelled by request")

    # --- running -----------------------------------------------------------------------

    def start(
        self,
        command: Command | Job = (),
        *,
        echo: bool = False,
        stdin: int | None = subprocess.DEVNULL,
        on_created: Callable[[Execution], None] | None = None,
        sandbox: bool = False,
        **options: Unpack[JobOptions],
    ) -> Running:
        """Start a program under capture; a handle to it (see :class:`Running`).

        ``command`` is a list of strings (or a whole :class:`~outspool.jobs.Job`);
        ``options`` are the job's other fields (``name``, ``timeout``, ``env``,
        ``cwd``, ``pty``, ``language``/``code``, the limits, ``secrets``). ``echo``
        copies the output to this process's stdout/stderr; ``on_created`` is called
        with the new record before the program starts. ``sandbox`` runs it in a
        bubblewrap sandbox (with the network if the job asks for ``network``).
        ``secrets`` are masked in the output and never stored.
        """
        job = job_of(command, options)
        job.validate(self.settings)
        isolation = self._isolation(job, sandbox)
        if not sandbox:  # inside, programs are found on the sandbox's own PATH
            check_runnable(job.argv(self.settings), job.cwd)
        writer = self.writer
        kept = replace(job, secrets={})  # run here and now: secrets need not be stored at all
        execution = queue.create(self.store, self.settings, kept, Status.RUNNING, self.worker_id)
        if on_created is not None:
            on_created(execution)
        return self.launch(
            execution,
            env=program_env(self.settings, execution),
            stdin=stdin,
            echo={Stream.STDOUT: 1, Stream.STDERR: 2} if echo else None,
            writer=writer,
            isolation=isolation,
        )

    def _isolation(self, job: Job, sandbox: bool) -> Isolation:
        """The confinement one ``start`` asks for; refused when it cannot be had."""
        box = None
        if sandbox:
            if (problem := sandbox_problem()) is not None:
                raise ConfigError(problem)
            box = Sandbox(network=job.network, disk=self.settings.sandbox_disk)
        return Isolation(sandbox=box, limits=job.limits(), secrets=job.secrets)

    def launch(
        self,
        execution: Execution,
        *,
        env: Mapping[str, str],
        stdin: int | None = subprocess.DEVNULL,
        echo: dict[Stream, int] | None = None,
        child_setup: Callable[[], None] | None = None,
        writer: Writer | None = None,
        on_end: Callable[[Running], None] | None = None,
        isolation: Isolation | None = None,
        start: bool = True,
    ) -> Running:
        """Run an execution that is already stored (and claimed by this process).

        ``start=False``: the handle is returned before the program is spawned; call its
        ``start()`` (after which ``on_end`` may be called at any time, on any thread).
        """
        execute = Execute(
            self.store,
            writer or self.writer,
            self.settings,
            execution,
            env=env,
            worker_id=self.worker_id,
            stdin=stdin,
            echo=echo,
            child_setup=child_setup,
            isolation=isolation,
        )

        def ended(handle: Running) -> None:
            with self._lock:
                self._running.pop(execution.id, None)
            if on_end is not None:
                on_end(handle)

        handle = Running(self, execute, ended)
        with self._lock:
            self._running[execution.id] = handle
        if start:
            handle.start()
        return handle

    def run(
        self,
        command: Command | Job = (),
        *,
        echo: bool = False,
        stdin: int | None = subprocess.DEVNULL,
        sandbox: bool = False,
        **options: Unpack[JobOptions],
    ) -> Execution:
        """Run a program to its end under capture (see :meth:`start`); its final record.

        Interrupted while waiting (Ctrl-C), it stops the program, records that
        (``cancelled``) and re-raises.
        """
        handle = self.start(command, echo=echo, stdin=stdin, sandbox=sandbox, **options)
        try:
            return handle.wait()
        except BaseException as exc:
            if not handle.join(0):
                handle.cancel(f"stopped: interrupted by {type(exc).__name__}")
                handle.join()
            raise

    async def arun(
        self,
        command: Command | Job = (),
        *,
        echo: bool = False,
        stdin: int | None = subprocess.DEVNULL,
        sandbox: bool = False,
        **options: Unpack[JobOptions],
    ) -> Execution:
        """:meth:`run` for asyncio. Cancelling the awaiting task stops the program;
        its ending (``cancelled``) is stored before the cancellation propagates."""
        import asyncio

        starting = asyncio.ensure_future(
            _to_thread(self.start, command, echo=echo, stdin=stdin, sandbox=sandbox, **options)
        )
        handle: Running | None = None
        try:
            handle = await asyncio.shield(starting)
            return await _to_thread(handle.wait)
        except asyncio.CancelledError:
            if handle is None:
                handle = await starting
            handle.cancel("stopped: the awaiting task was cancelled")
            await _to_thread(handle.join)
            raise

    # --- the queue ---------------------------------------------------------------------

    def submit(self, command: Command | Job = (), **options: Unpack[JobOptions]) -> Execution:
        """Queue a program for a worker (``outspool worker``); the new ``queued`` record.

        Takes what :meth:`start` takes: a command or a :class:`~outspool.jobs.Job`, and options.
        """
        return queue.submit(self.store, self.settings, job_of(command, options))

    def cancel(self, execution_id: str, reason: str = "cancelled by request") -> Execution:
        """Cancel: a queued execution never starts; a running one is stopped by its process."""
        return queue.cancel(self.store, execution_id, reason)

    def mark_lost(self) -> list[str]:
        """End as ``lost`` the executions whose capturing process stopped heartbeating
        (on this machine: is gone); the IDs it ended. Kills nothing (what ``serve`` does)."""
        return queue.mark_lost(self.store, self.settings)

    def recover(self) -> list[str]:
        """End as ``lost`` the executions whose capturing process stopped heartbeating,
        and kill their leftover processes on this host; the IDs it ended."""
        return queue.recover(self.store, self.settings)

    # --- deleting ----------------------------------------------------------------------

    def delete(self, execution_id: str, *, force: bool = False) -> str:
        """Delete an execution and all its output; its full ID. The space comes back.

        A queued or running one is refused (InvalidStateError) unless ``force``,
        which cancels it and waits for its end first.
        """
        return prune.remove(self.store, self.settings, execution_id, force=force)

    def prune(
        self,
        *,
        older_than: float | None = None,
        keep_last: int | None = None,
        max_size: int | None = None,
        statuses: Iterable[Status] = (),
        dry_run: bool = False,
    ) -> Pruned:
        """Delete finished executions matching every rule given (queued and running stay)."""
        rules = prune.Rules(older_than, keep_last, max_size, frozenset(statuses))
        return prune.prune(self.store, rules, dry_run=dry_run)

    # --- reading -----------------------------------------------------------------------

    def get(self, execution_id: str) -> Execution:
        """One execution by ID or unique ID prefix, else the newest with that name."""
        return self.store.get(execution_id)

    def list(
        self,
        status: Status | None = None,
        limit: int = 50,
        before: str | None = None,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        since: float | None = None,
    ) -> list[Execution]:
        """Executions, newest first, with this name, all these labels, created since then."""
        return self.store.list_executions(
            status, limit, before, name=name, labels=labels, since=since
        )

    def wait(self, execution_id: str, timeout: float | None = None) -> Execution:
        """Block until an execution (run by any process) has ended; its final record.

        TimeoutError after ``timeout`` seconds. A capture that died ends it as ``lost``.
        """
        ex = self.get(execution_id)
        return wait_for(self.store, ex.id, timeout, self.settings.heartbeat_timeout)

    def lines(
        self,
        execution_id: str,
        stream: Stream | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Line]:
        """Stored output as lines, each with the time it was read and its stream; with
        ``since``/``until`` (epoch seconds), only those read in that window, and only the
        chunks that can hold them are read."""
        return iter_lines(self.store, self.get(execution_id).id, stream, since, until)

    def since_start(
        self, execution_id: str, stream: Stream | None, since: float
    ) -> tuple[int, bool]:
        """Where lines read at or after ``since`` can begin: ``(offset, mid_line)``, for a
        :class:`~outspool.lines.LineSplitter` (earlier chunks need not be read)."""
        return since_start(self.store, self.get(execution_id).id, stream, since)

    def line_starts(
        self, execution_id: str, stream: Stream | None, offset: int, data: bytes
    ) -> Sequence[tuple[int, int]]:
        """``(position, ms)`` of the first byte of ``data`` (a range stored from ``offset``)
        and of every line start in it: when each was read."""
        return line_starts(self.store, self.get(execution_id).id, stream, offset, data)

    def search(
        self,
        execution_id: str,
        pattern: re.Pattern[str],
        stream: Stream | None = None,
        window: Window | None = None,
    ) -> Iterator[Match]:
        """The lines of an execution matching ``pattern`` (see :mod:`outspool.search`)."""
        return search(self.store, self.get(execution_id).id, pattern, stream, window)

    def watch(
        self,
        executions: Sequence[Execution] = (),
        labels: Mapping[str, str] | None = None,
        stream: Stream | None = None,
    ) -> Watch:
        """Whole lines of several executions as they are stored, and, with ``labels``, of
        every execution with those labels that starts from now on."""
        selector = Selector(tuple(executions), dict(labels or {}))
        return Watch(self.store, selector, stream, lost_after=self.settings.heartbeat_timeout)

    def read(self, execution_id: str, stream: Stream | None = None) -> bytes:
        """The whole stored output of a stream (``None``: both, in arrival order)."""
        return read_all(self.store, self.get(execution_id).id, stream)

    def iter_output(
        self, execution_id: str, stream: Stream | None = None, *, checked: int = 0
    ) -> Iterator[bytes]:
        """The stored output chunk by chunk, in order, holding one batch in memory.

        ``checked``: first read and check this many bytes of it, so that damage there
        raises DamagedError now, not midway through the iteration.
        """
        found = self.get(execution_id).id
        if checked:
            check(self.store, found, checked)
        return iter_output(self.store, found, stream)

    def iter_pieces(self, execution_id: str, stream: Stream | None = None) -> Iterator[bytes | Gap]:
        """Like :meth:`iter_output`, with a :class:`~outspool.follow.Gap` where bytes were
        not kept (past the execution's output limit)."""
        return iter_pieces(self.store, self.get(execution_id).id, stream)

    def output(
        self, execution_id: str, stream: Stream | None = None, offset: int = 0, limit: int = 1 << 20
    ) -> Range:
        """A byte range of a stream, with the offset to continue from."""
        return read_range(self.store, self.get(execution_id).id, stream, offset, limit)

    def pieces(self, execution_id: str, offset: int = 0, limit: int = 1 << 20) -> PieceRange:
        """Both streams from byte ``offset`` of the merged stream, as pieces tagged with
        their stream, with the offset to continue from."""
        return read_pieces(self.store, self.get(execution_id).id, offset, limit)

    def line_boundary(self, execution_id: str, offset: int) -> tuple[int, int]:
        """Where a viewer can begin reading, at or before ``offset`` (no line of either
        stream open there), and how many lines start before it."""
        return line_boundary(self.store, self.get(execution_id).id, offset)

    def tail(self, execution_id: str, lines: int = 100, stream: Stream | None = None) -> Range:
        """The last ``lines`` lines, read from the newest chunks only."""
        return tail(self.store, self.get(execution_id).id, lines, stream)

    def follow(
        self,
        execution_id: str,
        stream: Stream | None = None,
        offset: int = 0,
        *,
        batch: int = 64,
    ) -> Follower:
        """Iterate new output (sync or async) until the execution ends, or until its
        capturing process is found lost (no heartbeat for ``heartbeat_timeout``): then
        it is marked ``lost`` and the follow ends. Following never kills anything.

        Each step reads at most ``batch`` chunks (of at most ``max_chunk_size``)."""
        return Follower(
            self.store,
            self.get(execution_id).id,
            stream,
            offset,
            lost_after=self.settings.heartbeat_timeout,
            batch=batch,
        )

    async def aget(self, execution_id: str) -> Execution:
        return await _to_thread(self.get, execution_id)

    async def aread(self, execution_id: str, stream: Stream | None = None) -> bytes:
        return await _to_thread(self.read, execution_id, stream)
