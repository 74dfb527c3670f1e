"""Running one program under capture: the execution's whole life in one place.

create the record -> spawn -> mark running -> capture into the writer -> record
the outcome. Used by ``outspool run`` (via :class:`outspool.client.Outspool`)
and by the worker.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from outspool.capture import Capture
from outspool.errors import ConfigError, OutspoolError, SpawnError
from outspool.models import Execution, Outcome, Status, Stream
from outspool.process import spawn
from outspool.settings import Settings
from outspool.store.base import NewExecution, Store
from outspool.writer import Sink, Writer

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, sorts like time


def new_id(now: float | None = None) -> str:
    """A 16-character ID that sorts by creation time: 9 characters of ms, 7 random."""
    ms = int((time.time() if now is None else now) * 1000)
    head = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in reversed(range(9)))
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(7))
    return head + tail


@dataclass(frozen=True, slots=True)
class Job:
    """What to run: an argv, or a language and code (the design document's job)."""

    command: tuple[str, ...] = ()
    language: str | None = None
    code: str | None = None
    name: str | None = None
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    pty: bool = False

    def argv(self, settings: Settings) -> tuple[str, ...]:
        """The command line to start, resolving ``language`` through settings."""
        if self.language is None:
            if not self.command:
                raise SpawnError("no command given")
            return self.command
        prefix = settings.languages.get(self.language)
        if prefix is None:
            known = ", ".join(sorted(settings.languages))
            raise ConfigError(f"unknown language {self.language!r} (known: {known})")
        return (*prefix, self.code or "")

    def validate(self, settings: Settings) -> None:
        """Refuse a job that can never run, before it is stored."""
        if self.command and self.language:
            raise ConfigError("give either a command or --language/--code, not both")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {self.timeout}")
        self.argv(settings)

    def check_runnable(self, settings: Settings, cwd: str | None = None) -> None:
        """Refuse, before anything is stored, a program this machine cannot start."""
        program = self.argv(settings)[0]
        if shutil.which(program, path=os.environ.get("PATH")) is None:
            if os.sep in program and os.path.exists(program):
                raise SpawnError(f"permission denied: {program}")
            raise SpawnError(f"command not found: {program}")
        if cwd is not None and not os.path.isdir(cwd):
            raise SpawnError(f"not a directory: {cwd}")

    def new_execution(
        self, settings: Settings, status: Status, worker_id: str | None = None
    ) -> NewExecution:
        return NewExecution(
            command=self.argv(settings),
            status=status,
            name=self.name,
            language=self.language,
            code=self.code,
            cwd=self.cwd,
            env=dict(self.env),
            timeout=self.timeout,
            pty=self.pty,
            worker_id=worker_id,
        )


#: Set in every program's environment; recovery finds orphans by it.
EXECUTION_ENV = "OUTSPOOL_EXECUTION_ID"


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
        self._capture: Capture | None = None
        self._stop: tuple[Status, str, bool] | None = None
        self.sink: Sink | None = None

    def stop(self, status: Status, reason: str, force: bool = False) -> None:
        """Stop the program (its whole group); the execution ends with ``status``.

        ``force`` skips the grace period: SIGKILL at once.
        """
        self._stop = (status, reason, force)
        if self._capture is not None:
            self._capture.request_stop(status, reason, force)

    def run(self) -> Outcome:
        """Spawn, capture, and record the outcome. Spawn errors end the execution ``failed``."""
        ex = self.execution
        sink = self.writer.open(ex.id)
        self.sink = sink
        try:
            child = spawn(
                ex.command,
                env=self._env,
                cwd=ex.cwd,
                use_pty=ex.pty,
                stdin=self._stdin,
                pipe_size=self.settings.read_size,
                extra_setup=self._child_setup,
            )
        except OutspoolError as exc:
            outcome = Outcome(Status.FAILED, None, None, str(exc))
            sink.finish(outcome)
            raise
        sink.started(child.pid, time.time(), self._worker_id)
        s = self.settings
        self._capture = Capture(
            child,
            sink,
            read_size=s.read_size,
            timeout=ex.timeout,
            kill_grace=s.kill_grace,
            drain_grace=s.drain_grace,
            echo=self._echo,
        )
        if self._stop is not None:
            self._capture.request_stop(*self._stop)
        outcome = self._capture.run()
        sink.finish(outcome)
        return outcome
