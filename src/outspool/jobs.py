"""What to run: the one :class:`Job` value, and the IDs executions get.

A job is the same whether it comes from the library (``Outspool.run``/``start``/
``submit``), the CLI (``outspool run``/``submit``) or the HTTP API (``POST
/api/executions``): each of them builds a :class:`Job` and nothing else. To give
jobs a new option, add a field here (and to :class:`JobOptions`); the CLI's
shared program options, the API body and the stored row follow from it.
No I/O here: queuing a job imports neither capture nor the store.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from outspool.errors import ConfigError, SpawnError
from outspool.labels import validate as validate_labels
from outspool.limits import LIMIT_OPTIONS, Limits, check_asked
from outspool.masking import check_secret
from outspool.settings import Settings, check_timeout

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, sorts like time

#: A command line: a list or tuple of strings (never one string: there is no shell).
Command = list[str] | tuple[str, ...]


def new_id(now: float | None = None) -> str:
    """A 16-character ID that sorts by creation time: 9 characters of ms, 7 random."""
    ms = int((time.time() if now is None else now) * 1000)
    head = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in reversed(range(9)))
    tail = "".join(secrets.choice(_ALPHABET) for _ in range(7))
    return head + tail


def as_command(value: object) -> tuple[str, ...]:
    """``value`` as an argv tuple; a ``str`` or anything but a sequence of strings is a TypeError.

    ``spool.run("echo hello")`` would otherwise try to start a program named ``e``.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise TypeError(
            f"command must be a list of strings, like ['echo', 'hello'], not {type(value).__name__}"
        )
    for arg in value:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be strings, not {type(arg).__name__}")
    return tuple(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What to run: an argv, or a language and code (the design document's job)."""

    command: tuple[str, ...] = ()  #: the program and its arguments
    language: str | None = None  #: run ``code`` with this language (``settings.languages``)
    code: str | None = None  #: the code to run with ``language``
    name: str | None = None  #: a name to find the execution by
    timeout: float | None = None  #: seconds before it is stopped (``timed_out``)
    env: Mapping[str, str] = field(default_factory=dict)  #: variables added to its environment
    cwd: str | None = None  #: working directory (a worker's default: a fresh temporary one)
    pty: bool = False  #: run on a pseudo-terminal (stdout and stderr merge)
    network: bool = False  #: keep the network in the sandbox (if the worker allows it)
    cpu_time: float | None = None  #: CPU seconds per process (reason ``cpu time limit``)
    memory: int | None = None  #: bytes, all its processes together (``memory limit``)
    max_processes: int | None = None  #: processes and threads at once (``process limit``)
    max_file_size: int | None = None  #: bytes of the largest file it writes (``file size limit``)
    #: Variables added to its environment, masked as ``[MASKED]`` in its output, never shown.
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)  #: ``KEY=VALUE``s to find it by
    #: bytes kept of each stream: its first and last halves (at most the ``max_output`` setting)
    max_output: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", as_command(self.command))
        object.__setattr__(self, "env", dict(self.env))
        object.__setattr__(self, "secrets", dict(self.secrets))
        object.__setattr__(self, "labels", dict(self.labels))

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
        check_timeout(self.timeout)
        for what, text in self._texts():
            check_utf8(what, text)
        self._validate_limits(settings)
        for key, value in self.secrets.items():
            check_secret(key, value)
        validate_labels(self.labels)
        if self.max_output is not None and self.max_output < 0:
            raise ConfigError(f"max_output must be a number of bytes, not {self.max_output}")
        self.argv(settings)

    def _validate_limits(self, settings: Settings) -> None:
        for name, option in LIMIT_OPTIONS.items():
            value = getattr(self, name)
            if value is not None and not 0 < value < 1 << 62:  # nan and inf fail too
                raise ConfigError(f"{option} must be a positive finite number, not {value}")
        check_asked(self.limits(), settings)

    def limits(self) -> Limits:
        """The limits the job asks for (None where it asks nothing)."""
        return Limits(
            cpu_time=self.cpu_time,
            memory=self.memory,
            processes=self.max_processes,
            file_size=self.max_file_size,
        )

    def _texts(self) -> list[tuple[str, str]]:
        """The fields stored as text (the command is stored as JSON, any bytes allowed)."""
        texts = [("name", self.name), ("language", self.language), ("code", self.code)]
        texts.append(("cwd", self.cwd))
        texts += [(f"env {key}", f"{key}={value}") for key, value in self.env.items()]
        return [(what, text) for what, text in texts if text is not None]


def check_utf8(what: str, text: str) -> None:
    """Refuse text that is not UTF-8 (bytes from a command line arrive as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
        raise ConfigError(f"{what} is not valid UTF-8: '{shown}'") from None


class JobOptions(TypedDict, total=False):
    """The keyword arguments ``Outspool.run``/``start``/``submit`` take: :class:`Job`'s fields."""

    language: str | None
    code: str | None
    name: str | None
    timeout: float | None
    env: Mapping[str, str]
    cwd: str | None
    pty: bool
    network: bool
    cpu_time: float | None
    memory: int | None
    max_processes: int | None
    max_file_size: int | None
    secrets: Mapping[str, str]
    labels: Mapping[str, str]
    max_output: int | None
