"""The library's front door: :class:`Outspool` runs programs and reads what they printed.

Synchronous at the core; every blocking call has an ``a``-prefixed async face
that runs it in a thread (one core, not sync and async twins)::

    with Outspool("runs.db") as spool:
        ex = spool.run(["python", "-c", "print('hi')"])
        spool.read(ex.id)            # b'hi\\n'
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from outspool import queue
from outspool.errors import StoreError
from outspool.follow import (
    Follower,
    Range,
    iter_output,
    read_all,
    read_range,
    tail,
)
from outspool.follow import to_thread as _to_thread
from outspool.heartbeat import Heartbeat
from outspool.models import Execution, Status, Stream
from outspool.runner import Execute, Job, new_id, program_env
from outspool.settings import Settings
from outspool.store import Store, open_store
from outspool.writer import Writer


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
        self._thread = threading.Thread(target=self._run, name=f"outspool-{self.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread; True once it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._execute.run()
        except BaseException as exc:
            self.error = exc
        finally:
            self._on_end(self)

    def status(self) -> Status:
        return self.execution().status

    def execution(self) -> Execution:
        return self._spool.get(self.id)

    def wait(self, timeout: float | None = None) -> Execution:
        """Block until the execution has ended and is stored; its final record."""
        if not self.join(timeout):
            raise TimeoutError(f"execution {self.id} still running after {timeout} s")
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
        self._running: dict[str, Execute] = {}
        self._lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> Outspool:
        if self._store is None:
            self._store = open_store(self.db, self.settings, create=self.create)
        return self

    def close(self) -> None:
        """Commit all pending output, then stop heartbeating and release the store."""
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

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("Outspool is not open: call open() or use it in a with block")
        return self._store

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

    def _cancel_requested(self, execution_id: str, reason: str | None) -> None:
        with self._lock:
            execute = self._running.get(execution_id)
        if execute is not None:
            execute.stop(Status.CANCELLED, reason or "cancelled by request")

    # --- running -----------------------------------------------------------------------

    def start(
        self,
        command: Sequence[str] = (),
        *,
        language: str | None = None,
        code: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        pty: bool = False,
        echo: bool = False,
        stdin: int | None = subprocess.DEVNULL,
        on_created: Callable[[Execution], None] | None = None,
    ) -> Running:
        """Start a program under capture in a background thread; a handle to it.

        ``on_created`` is called with the new record before the program starts.
        """
        job = Job(tuple(command), language, code, name, timeout, dict(env or {}), cwd, pty)
        job.validate(self.settings)
        job.check_runnable(self.settings, cwd)
        writer = self.writer
        execution = self.store.create(
            job.new_execution(self.settings, Status.RUNNING, self.worker_id),
            new_id(),
            time.time(),
        )
        if on_created is not None:
            on_created(execution)
        return self.launch(
            execution,
            env=program_env(self.settings, execution),
            stdin=stdin,
            echo={Stream.STDOUT: 1, Stream.STDERR: 2} if echo else None,
            writer=writer,
        )

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
    ) -> Running:
        """Run an execution that is already stored (and claimed by this process)."""
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
        )
        with self._lock:
            self._running[execution.id] = execute

        def ended(handle: Running) -> None:
            with self._lock:
                self._running.pop(execution.id, None)
            if on_end is not None:
                on_end(handle)

        handle = Running(self, execute, ended)
        handle.start()
        return handle

    def run(self, command: Sequence[str] = (), **options: Any) -> Execution:
        """Run a program to its end under capture; its final record."""
        return self.start(command, **options).wait()

    async def arun(self, command: Sequence[str] = (), **options: Any) -> Execution:
        return await _to_thread(self.run, command, **options)

    # --- the queue ---------------------------------------------------------------------

    def submit(
        self,
        command: Sequence[str] = (),
        *,
        language: str | None = None,
        code: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        pty: bool = False,
    ) -> Execution:
        """Queue a program for a worker (``outspool worker``); the new ``queued`` record."""
        job = Job(tuple(command), language, code, name, timeout, dict(env or {}), cwd, pty)
        return queue.submit(self.store, self.settings, job)

    def cancel(self, execution_id: str, reason: str = "cancelled by request") -> Execution:
        """Cancel: a queued execution never starts; a running one is stopped by its process."""
        return queue.cancel(self.store, execution_id, reason)

    # --- reading -----------------------------------------------------------------------

    def get(self, execution_id: str) -> Execution:
        """One execution, by ID or unique ID prefix."""
        return self.store.get(execution_id)

    def list(
        self, status: Status | None = None, limit: int = 50, before: str | None = None
    ) -> list[Execution]:
        return self.store.list_executions(status, limit, before)

    def read(self, execution_id: str, stream: Stream | None = None) -> bytes:
        """The whole stored output of a stream (``None``: both, in arrival order)."""
        return read_all(self.store, self.get(execution_id).id, stream)

    def iter_output(self, execution_id: str, stream: Stream | None = None) -> Iterator[bytes]:
        """The stored output chunk by chunk, in order, holding one batch in memory."""
        return iter_output(self.store, self.get(execution_id).id, stream)

    def output(
        self, execution_id: str, stream: Stream | None = None, offset: int = 0, limit: int = 1 << 20
    ) -> Range:
        """A byte range of a stream, with the offset to continue from."""
        return read_range(self.store, self.get(execution_id).id, stream, offset, limit)

    def tail(self, execution_id: str, lines: int = 100, stream: Stream | None = None) -> Range:
        """The last ``lines`` lines, read from the newest chunks only."""
        return tail(self.store, self.get(execution_id).id, lines, stream)

    def follow(self, execution_id: str, stream: Stream | None = None, offset: int = 0) -> Follower:
        """Iterate new output (sync or async) until the execution ends."""
        return Follower(self.store, self.get(execution_id).id, stream, offset)

    async def aget(self, execution_id: str) -> Execution:
        return await _to_thread(self.get, execution_id)

    async def aread(self, execution_id: str, stream: Stream | None = None) -> bytes:
        return await _to_thread(self.read, execution_id, stream)
