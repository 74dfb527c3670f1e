"""The worker: claims queued executions and runs up to N of them at once.

Signal handlers only set flags; the loop acts on them. The first SIGTERM or
SIGINT stops claiming and lets running programs finish within
``shutdown_grace``, then stops them (``cancelled``, reason ``worker shutdown``);
a second one stops them at once. Either way all output is committed before the
worker exits.

Each program gets a clean environment (``env_allowlist`` plus the job's own
variables), a fresh temporary working directory unless the job names one, and
the resource limits from settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import replace

from outspool import sandbox
from outspool.client import HANDLERS, Outspool, Running
from outspool.display import one_line, shown_exit
from outspool.errors import ConfigError, OutspoolError, StoreError
from outspool.isolation import Isolation
from outspool.jobs import Job
from outspool.limits import Limits, effective
from outspool.models import Execution
from outspool.prune import Retention
from outspool.runner import program_env
from outspool.sandbox import Sandbox
from outspool.settings import Settings
from outspool.store.base import QUEUE
from outspool.warm import WarmPool
from outspool.watchdog import Watchdog

IDLE_POLL = 0.1  # seconds between looks at the queue when there is nothing to do
#: Default slots per CPU when jobs are sandboxed: a sandbox keeps its job waiting on the
#: kernel (namespaces made and torn down) for about 10 ms without using a CPU, so two
#: cores run trivial sandboxed jobs faster with 8 slots than with 2 (docs/performance.md).
SANDBOXED_SLOTS_PER_CPU = 4
log = logging.getLogger("outspool.worker")


def _workdir(execution_id: str) -> str:
    """A fresh private directory for one job: named after it (cheaper than
    ``mkdtemp``'s random names), or a random one if that name is taken."""
    try:
        path = os.path.join(tempfile.gettempdir(), f"outspool-{execution_id}")
        os.mkdir(path, 0o700)
    except FileExistsError:
        return tempfile.mkdtemp(prefix="outspool-")
    return path


def default_concurrency(settings: Settings) -> int:
    """Slots when none are asked for: one per CPU, four per CPU when jobs are sandboxed."""
    cpus = os.cpu_count() or 1
    return cpus * SANDBOXED_SLOTS_PER_CPU if settings.sandbox == "bwrap" else cpus


def _remove_workdir(path: str) -> None:
    """A job's directory, usually left empty: one ``rmdir``, else the whole tree."""
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def raise_open_files_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit.

    Each running program holds three descriptors here (two pipes and a pidfd, on the
    capture loop's epoll), so the usual soft default of 1,024 would stop a worker near 340
    programs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Worker:
    """Runs queued executions from one store until stopped (or, in burst mode, until empty)."""

    def __init__(
        self,
        db: str | None = None,
        settings: Settings | None = None,
        concurrency: int | None = None,
        burst: bool = False,
    ) -> None:
        self.settings = settings or Settings.load()
        self.spool = Outspool(db, self.settings, kind="worker")
        self.concurrency = concurrency or default_concurrency(self.settings)
        self.burst = burst
        self._running: dict[str, Running] = {}
        self._ended: list[Running] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._force = False
        self._thread: threading.Thread | None = None
        self._retention: Retention | None = None
        self._base_env: dict[str, str] | None = None
        self._warm: WarmPool | None = None
        self._watchdog: Watchdog | None = None
        self.completed = 0
        self.warm_starts = 0  #: jobs started in a sandbox built before their claim

    @property
    def worker_id(self) -> str:
        return self.spool.worker_id

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def stop(self, force: bool = False) -> None:
        """Ask the loop to stop (safe from a signal handler): drain, or with force stop now."""
        self._stopping = True
        self._force = self._force or force
        self._wake.set()

    def start(self) -> Worker:
        """Run in a background thread (see :meth:`join`); signals stay the caller's."""
        self._thread = threading.Thread(target=self.run, name="outspool-worker", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a worker started with :meth:`start`; True once it has stopped."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self) -> None:
        """Work until stopped; always commits all output and records every ending.

        Refuses to start (:class:`ConfigError`) when jobs are to be sandboxed and
        this machine cannot.
        """
        if self.settings.sandbox == "bwrap" and (problem := sandbox.problem()) is not None:
            raise ConfigError(problem)
        raise_open_files_limit()
        self._watchdog = Watchdog.start()  # kills our jobs' processes if we die
        try:
            with self.spool:  # left by an exception: what still runs is stopped and recorded
                _ = self.spool.writer  # registers this worker and starts its heartbeat
                log.info("%s started, concurrency %d", self.worker_id, self.concurrency)
                self._warm = self._warm_pool()
                try:
                    self._loop()
                finally:
                    if self._warm is not None:
                        self._warm.close()
                self._shutdown()
                self._report_ended()
        finally:
            if self._watchdog is not None:
                self._watchdog.close()
            log.info("%s stopped after %d executions", self.worker_id, self.completed)

    # --- the loop ----------------------------------------------------------------------

    def _warm_pool(self) -> WarmPool | None:
        """Sandboxes built ahead for the next jobs, if jobs are sandboxed: one per slot, but
        no more than the programs this process starts at once (:data:`HANDLERS`). With a
        thousand slots, one per slot built and threw away up to a thousand spares while
        the programs ran (docs/performance.md, *Many live executions in one worker*)."""
        s = self.settings
        if s.sandbox != "bwrap" or not s.sandbox_warm:
            return None
        box = Sandbox(disk=s.sandbox_disk)
        size = min(self.concurrency, HANDLERS)
        return WarmPool(box, s.default_memory is not None, s.read_size, size)

    def _loop(self) -> None:
        next_recovery = 0.0
        outage: str | None = None
        while not self._stopping:
            self._report_ended()
            try:
                if time.monotonic() >= next_recovery:
                    for lost in self.spool.recover():
                        log.info("%s lost: its capturing process stopped heartbeating", lost)
                    next_recovery = time.monotonic() + self.settings.heartbeat_timeout / 2
                self._retain()
                claimed = self._claim()
            except StoreError as exc:  # the database is away: keep running what we have
                if str(exc) != outage:
                    outage = str(exc)
                    log.warning("cannot reach the queue, retrying: %s", exc)
                claimed = False
            else:
                if outage is not None:
                    outage = None
                    log.info("the queue is reachable again")
            with self._lock:
                busy = len(self._running)
            if self.burst and not claimed and busy == 0 and outage is None:
                return
            if not claimed and busy < self.concurrency and outage is None:
                self._wait_for_jobs()
            elif not claimed or busy >= self.concurrency:
                self._wake.wait(IDLE_POLL if outage is None else 1.0)
                self._wake.clear()

    def _wait_for_jobs(self) -> None:
        """Idle: until a job is queued (a NOTIFY on PostgreSQL, the next commit to the file
        on SQLite), a job of ours ends, or IDLE_POLL passes."""
        if self._wake.is_set():
            self._wake.clear()
            return
        try:
            self.spool.store.wait(QUEUE, IDLE_POLL)
        except StoreError:
            self._wake.wait(IDLE_POLL)

    def _retain(self) -> None:
        """Apply the retention settings when they are set and due."""
        if self._retention is None:
            self._retention = Retention(self.spool.store, self.settings)
        if self._retention.due(time.monotonic()):
            pruned = self._retention.apply(time.monotonic())
            if pruned.count:
                log.info("retention deleted %d executions (%d bytes)", pruned.count, pruned.bytes)

    def _claim(self) -> bool:
        """Start as many queued executions as there are free slots, claimed together in
        one statement; True if any started."""
        started = False
        while not self._stopping:
            with self._lock:
                free = self.concurrency - len(self._running)
            if free <= 0:
                return started
            claimed = self.spool.store.claim_many(self.worker_id, time.time(), free)
            for execution in claimed:
                self._start(execution)
            if len(claimed) < free:
                return started or bool(claimed)
            started = True
        return started

    def _start(self, execution: Execution) -> None:
        isolation = self._isolation(execution)
        box = isolation.sandbox
        if self._warm is not None and box is not None and not execution.cwd and not execution.pty:
            isolation = replace(isolation, warm=self._warm.take(box, isolation.limits))
            self.warm_starts += isolation.warm is not None
        fresh = not execution.cwd and isolation.sandbox is None  # a sandbox has its own
        workdir = _workdir(execution.id) if fresh else None
        if self._base_env is None:  # the variables we pass on, read once
            allowed = self.settings.env_allowlist
            self._base_env = {k: os.environ[k] for k in allowed if k in os.environ}
        env = program_env(self.settings, execution, self._base_env)
        if workdir is not None:
            execution = replace(execution, cwd=workdir)
        if execution.language is not None:  # resolve with this machine's interpreters
            job = Job(language=execution.language, code=execution.code)
            # an unknown language here: the stored command is tried as it is
            with contextlib.suppress(OutspoolError):
                execution = replace(execution, command=job.argv(self.settings))
        if log.isEnabledFor(logging.INFO):
            log.info("started %s: %s", execution.id, one_line(" ".join(execution.command), 80))

        def ended(handle: Running) -> None:
            if workdir is not None:
                _remove_workdir(workdir)
            with self._lock:
                self._running.pop(handle.id, None)
                self._ended.append(handle)  # reported by the loop, on its own connection
                self.completed += 1
            self._wake.set()

        handle = self.spool.launch(
            execution, env=env, isolation=isolation, on_end=ended, start=False
        )
        with self._lock:  # not held while it starts: an end may come at once
            self._running[execution.id] = handle
        handle.start()

    def _report_ended(self) -> None:
        with self._lock:
            ended, self._ended = self._ended, []
        for handle in ended:
            self._report(handle)

    def _report(self, handle: Running) -> None:
        if handle.error is not None and not isinstance(handle.error, OutspoolError):
            log.error("%s crashed the worker thread: %r", handle.id, handle.error)
            return
        outcome = handle.outcome  # from memory: reporting costs no read (nor a record) per job
        if outcome is None:
            log.warning("%s ended, but not as recorded: %s", handle.id, handle.error)
            return
        if not log.isEnabledFor(logging.INFO):
            return
        code = shown_exit(outcome)
        parts = (f"exit {code}" if code else "", outcome.reason or "")
        how = "; ".join(part for part in parts if part)
        took = f" in {duration:.2f} s" if (duration := handle.duration) is not None else ""
        log.info("%s %s (%s)%s", handle.id, outcome.status.value, one_line(how), took)

    def _isolation(self, execution: Execution) -> Isolation:
        """The job's sandbox, limits (its own, else ours, never above our ceilings), secrets."""
        s = self.settings
        box = None
        if s.sandbox == "bwrap":
            box = Sandbox(network=execution.network and s.allow_network, disk=s.sandbox_disk)
        asked = Limits(
            cpu_time=execution.cpu_time,
            memory=execution.memory,
            processes=execution.max_processes,
            file_size=execution.max_file_size,
        )
        limits = effective(asked, s)
        return Isolation(box, limits, execution.secrets, watchdog=self._watchdog)

    # --- shutdown ----------------------------------------------------------------------

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_grace
        with self._lock:
            waiting = len(self._running)
        if waiting:
            grace = self.settings.shutdown_grace
            log.info("shutting down: waiting up to %g s for %d running", grace, waiting)
        while not self._force and time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return
            self._wake.wait(min(IDLE_POLL, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
        with self._lock:
            handles = list(self._running.values())
        for handle in handles:
            handle.cancel("worker shutdown", force=self._force)
        for handle in handles:
            while not handle.join(IDLE_POLL):
                if self._force:
                    handle.cancel("worker shutdown", force=True)
