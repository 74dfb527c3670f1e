"""Running one program under capture: the execution's whole life in one place.

spawn -> mark running -> capture into the writer -> record the outcome, for an
execution already stored (:func:`outspool.queue.create`): :meth:`Execute.begin` on the
caller's thread, :meth:`Execute.complete` once the capture loop says the program ended. Used by
:class:`outspool.client.Outspool` for ``outspool run``, the library and the worker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping

from outspool.capture import Capture
from outspool.errors import OutspoolError, SpawnError
from outspool.isolation import EXECUTION_ENV, Isolation
from outspool.models import Execution, Outcome, Status, Stream
from outspool.process import spawn
from outspool.settings import Settings, check_timeout
from outspool.store.base import Store
from outspool.writer import Sink, Writer


def check_runnable(argv: tuple[str, ...], cwd: str | None = None) -> None:
    """Refuse, before anything is stored, a program this machine cannot start."""
    program = argv[0]
    if shutil.which(program, path=os.environ.get("PATH")) is None:
        if os.sep in program and os.path.exists(program):
            raise SpawnError(f"permission denied: {program}")
        raise SpawnError(f"command not found: {program}")
    if cwd is not None and not os.path.isdir(cwd):
        raise SpawnError(f"not a directory: {cwd}")


__all__ = ["EXECUTION_ENV", "Execute", "check_runnable", "program_env"]


def program_env(
    settings: Settings,
    execution: Execution,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a program starts with: ``base`` (default: ours) plus the job's own."""
    env = dict(os.environ if base is None else base)
    if settings.pythonunbuffered:
        env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(execution.env)
    env[EXECUTION_ENV] = execution.id
    return env


class Execute:
    """One execution's run from start to end; ``stop()`` may be called from any thread."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        settings: Settings,
        execution: Execution,
        *,
        env: Mapping[str, str],
        worker_id: str | None = None,
        stdin: int | None = None,
        echo: dict[Stream, int] | None = None,
        child_setup: Callable[[], None] | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.settings = settings
        self.execution = execution
        self._env = env
        self._worker_id = worker_id
        self._stdin = stdin
        self._echo = echo
        self._child_setup = child_setup
        self.isolation = isolation or Isolation()
        self._capture: Capture | None = None
        self._stop: tuple[Status, str, bool] | None = None
        self.sink: Sink | None = None
        self.started_at: float | None = None  #: when the program started (wall clock)
        self.finished_at: float | None = None  #: when its outcome was known
        self.outcome: Outcome | None = None  #: how it ended, once known

    def stop(self, status: Status, reason: str, force: bool = False) -> None:
        """Stop the program (its whole group); the execution ends with ``status``.

        ``force`` skips the grace period: SIGKILL at once.
        """
        self._stop = (status, reason, force)
        if self._capture is not None:
            self._capture.request_stop(status, reason, force)

    def begin(self, on_captured: Callable[[], None]) -> None:
        """Spawn and hand the program to the capture loop; returns at once. Spawn errors end
        the execution ``failed`` (recorded) and are raised.

        ``on_captured`` is called, on the capture loop's thread (it must not wait), once
        the program has ended and its output is read: then call :meth:`complete`.
        """
        ex = self.execution
        sink = self.writer.open(ex.id, ex.max_output)
        self.sink = sink
        guard = self.isolation.prepare(ex.id, ex.command, self._env, ex.cwd)
        try:
            check_timeout(ex.timeout)  # stored by an older version that did not check it
            guard.check_program(ex.command)
            child = guard.begin_warm() or spawn(
                guard.argv,
                env=guard.env,
                cwd=None if guard.sandboxed else ex.cwd,
                use_pty=ex.pty,
                stdin=self._stdin,
                pipe_size=self.settings.read_size,
                setup=guard.setup(),
                extra_setup=self._child_setup,
                pass_fds=guard.fds,
            )
        except OutspoolError as exc:
            guard.end()
            outcome = self._ended(Outcome(Status.FAILED, None, None, str(exc)))
            sink.finish(outcome)
            raise
        guard.started()
        child.guard = guard
        self.started_at = time.time()
        sink.started(child.pid, self.started_at, self._worker_id)
        s = self.settings
        self._capture = Capture(
            child,
            sink,
            read_size=s.read_size,
            timeout=ex.timeout,
            kill_grace=s.kill_grace,
            drain_grace=s.drain_grace,
            echo=self._echo,
            maskers=self.isolation.maskers(),
        )
        if self._stop is not None:
            self._capture.request_stop(*self._stop)
        self._capture.start(on_captured)

    def complete(self) -> Outcome:
        """After ``on_captured``: reap the program and record the outcome (returns once it is
        stored). Not on the capture loop's thread: this waits for the writer."""
        assert self._capture is not None and self.sink is not None
        outcome = self._ended(self._capture.complete())
        self.sink.finish(outcome)
        return outcome

    def _ended(self, outcome: Outcome) -> Outcome:
        self.finished_at = time.time()
        self.outcome = outcome
        return outcome
