"""One settings object: defaults, environment overrides (``OUTSPOOL_*``), validation.

Every field can be set from the environment as ``OUTSPOOL_<FIELD>`` (lists and
maps as JSON). ``OUTSPOOL_ENV=development`` gives the design document's 100 ms
flush interval unless ``OUTSPOOL_FLUSH_INTERVAL`` says otherwise. An invalid value
or an unknown ``OUTSPOOL_*`` variable is refused with a :class:`ConfigError`
naming the setting.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from outspool.errors import ConfigError
from outspool.units import MAX_DURATION, parse_duration, parse_size

ENV_PREFIX = "OUTSPOOL_"
#: Environment variables with our prefix that are not settings.
NON_SETTINGS = frozenset(
    {
        "OUTSPOOL_TEST_POSTGRES",
        "OUTSPOOL_TEST_DSN",
        "OUTSPOOL_TEST_BROWSER",
        "OUTSPOOL_EXECUTION_ID",
    }
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DAY = 86400.0
#: The longest timeout a job may have, in seconds (366 days).
MAX_TIMEOUT = 366 * DAY

#: ``(?<!\d)`` starts a number only where it starts, so a run of digits is scanned once.
DEFAULT_PROGRESS_PATTERNS = (r"(?<!\d)\d+%", r"step \d+", r"complete", r"error", r"warning")

#: Variables a program run by a worker inherits from the worker's environment.
DEFAULT_ENV_ALLOWLIST = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
)


def default_languages() -> dict[str, list[str]]:
    """``language -> argv prefix``; the code is appended as the last argument."""
    return {
        "python": [sys.executable, "-c"],
        "bash": ["bash", "-c"],
        "sh": ["sh", "-c"],
        "node": ["node", "-e"],
    }


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """All of outspool's tunables. Build with :meth:`load`; it is immutable."""

    # Where the store lives: a path, sqlite:///path or postgresql://...
    db: str | None = None
    #: production or development (development flushes every 100 ms).
    env: Literal["production", "development"] = "production"

    # --- the design document's buffer policy ---------------------------------
    #: Upper bound, in seconds, on how long output waits in memory before it is committed.
    flush_interval: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    #: A buffer holding more than this many bytes is flushed at once.
    max_buffer_size: Annotated[int, Meta(gt=0, le=GiB)] = 10 * KiB
    #: A buffer holding more than this many lines is flushed at once.
    max_buffer_lines: Annotated[int, Meta(gt=0, le=1_000_000_000)] = 100
    #: Streams up to this size are also kept inline in the executions row when done.
    max_inline_output: Annotated[int, Meta(ge=0, le=GiB)] = 1 * MiB
    #: Regular expressions (case-insensitive) for lines that update ``progress``.
    progress_patterns: list[str] = msgspec.field(
        default_factory=lambda: list(DEFAULT_PROGRESS_PATTERNS)
    )

    # --- what fixes the design document's defects ------------------------------
    #: When the writer is idle, output is committed after this short delay (seconds).
    idle_flush_delay: Annotated[float, Meta(ge=0, le=3600)] = 0.005
    #: A chunk row closes once it holds this many bytes (before compression) plus one read.
    max_chunk_size: Annotated[int, Meta(ge=4 * KiB, le=256 * MiB)] = 1 * MiB
    #: The most bytes kept of each stream of one execution: its first and last halves (0: all).
    max_output: Annotated[int, Meta(ge=0, le=1 << 62)] = 64 * MiB
    #: Memory bound: above this many pending bytes per process, pipes stop being read.
    max_pending_bytes: Annotated[int, Meta(ge=64 * KiB, le=64 * GiB)] = 4 * MiB
    #: Bytes asked of the pipe per read; pipes are enlarged to this size when allowed.
    read_size: Annotated[int, Meta(ge=4 * KiB, le=64 * MiB)] = 1 * MiB
    #: Chunk compression: zstd when it makes a chunk smaller, or none.
    compression: Literal["zstd", "none"] = "zstd"
    #: zstd level: negative levels are the fast ones (they skip data that does not shrink,
    #: base64 included, at ~14 GB/s); higher is smaller, slower. Unset: the backend's own
    #: (-1 on SQLite, 1 on PostgreSQL, where every byte stored costs the server more).
    compression_level: Annotated[int, Meta(ge=-7, le=22)] | None = None
    #: How many recent lines of a running execution are kept at hand in memory.
    recent_lines: Annotated[int, Meta(ge=1, le=100_000)] = 100
    #: Only this many trailing bytes of each read are scanned for progress lines.
    progress_scan_bytes: Annotated[int, Meta(ge=256, le=MiB)] = 8 * KiB
    #: Seconds a database call waits on a lock held by another process.
    busy_timeout: Annotated[float, Meta(ge=0, le=DAY)] = 30.0
    #: How often (seconds) followers look for new output on backends that cannot push.
    poll_interval: Annotated[float, Meta(gt=0, le=10)] = 0.01

    # --- process handling ------------------------------------------------------
    #: Set PYTHONUNBUFFERED=1 in the program's environment, so Python output shows live.
    pythonunbuffered: bool = True
    #: Seconds between SIGTERM and SIGKILL when a program is stopped.
    kill_grace: Annotated[float, Meta(ge=0, le=DAY)] = 5.0
    #: Seconds output is still drained after the program exits while a child holds its pipes.
    drain_grace: Annotated[float, Meta(ge=0, le=DAY)] = 2.0
    #: Language name -> argv prefix for ``--language``/``--code``.
    languages: dict[str, list[str]] = msgspec.field(default_factory=default_languages)

    # --- worker ----------------------------------------------------------------
    #: Seconds between a worker's heartbeats.
    heartbeat_interval: Annotated[float, Meta(gt=0, le=3600)] = 2.0
    #: A running execution whose worker's heartbeat is older than this is ``lost``.
    heartbeat_timeout: Annotated[float, Meta(gt=0, le=DAY)] = 30.0
    #: Seconds a shutting-down worker lets running programs finish before stopping them.
    shutdown_grace: Annotated[float, Meta(ge=0, le=DAY)] = 10.0
    #: Variables a worker passes from its own environment to the programs it runs.
    env_allowlist: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))

    # --- sandbox and limits (issue: untrusted code) ------------------------------
    #: How a worker confines jobs: ``bwrap`` (bubblewrap namespaces) or ``none``.
    sandbox: Literal["bwrap", "none"] = "bwrap"
    #: Whether a sandboxed job that asks for the network (``--network``) gets it.
    allow_network: bool = False
    #: Bytes each of a sandbox's fresh ``/tmp``, working directory and ``/dev/shm`` may hold.
    sandbox_disk: Annotated[int, Meta(ge=1 * MiB, le=1 << 62)] = 256 * MiB
    #: Whether a worker builds its next jobs' sandboxes before claiming them.
    sandbox_warm: bool = True
    #: Limits of a worker's job that does not ask for one (None: the ceiling below).
    default_cpu_time: Annotated[float, Meta(gt=0, le=MAX_TIMEOUT)] | None = None
    default_memory: Annotated[int, Meta(ge=1 * MiB, le=1 << 62)] | None = None
    default_processes: Annotated[int, Meta(gt=0, le=1 << 62)] | None = 1024
    default_file_size: Annotated[int, Meta(gt=0, le=1 << 62)] | None = None
    #: Ceilings: a job may ask for less, never more (None: no ceiling).
    limit_cpu_time: Annotated[float, Meta(gt=0, le=MAX_TIMEOUT)] | None = None
    limit_memory: Annotated[int, Meta(ge=1 * MiB, le=1 << 62)] | None = None
    limit_processes: Annotated[int, Meta(gt=0, le=1 << 62)] | None = None
    limit_file_size: Annotated[int, Meta(gt=0, le=1 << 62)] | None = None
    limit_open_files: Annotated[int, Meta(gt=0, le=1 << 62)] | None = None

    # --- retention (applied by ``worker`` and ``serve`` every ``retention_interval``) ----
    #: Finished executions that ended longer ago than this (seconds) are deleted.
    retention_max_age: Annotated[float, Meta(ge=0, le=MAX_DURATION)] | None = None
    #: Only the newest this-many finished executions are kept.
    retention_keep_last: Annotated[int, Meta(ge=0, le=1 << 62)] | None = None
    #: Oldest finished executions are deleted until the stored output fits in this many bytes.
    retention_max_size: Annotated[int, Meta(ge=0, le=1 << 62)] | None = None
    #: Seconds between two applications of the retention settings.
    retention_interval: Annotated[float, Meta(gt=0, le=DAY)] = 300.0

    # --- web -------------------------------------------------------------------
    #: Bearer token required by ``outspool serve`` (mandatory off loopback).
    token: str | None = None
    #: Seconds a client has to send a whole request (headers and body); then 408.
    request_timeout: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    #: Open connections ``outspool serve`` accepts; more are answered 503 at once.
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read ``OUTSPOOL_*`` from the environment, apply overrides, validate.

        Raises :class:`ConfigError` naming the setting on any invalid value.
        """
        values: dict[str, Any] = {}
        for key, raw in os.environ.items():
            if key.startswith(ENV_PREFIX) and key not in NON_SETTINGS:
                name = key[len(ENV_PREFIX) :].lower()
                if name not in cls.__struct_fields__:
                    raise ConfigError(f"{key} is not an outspool setting")
                values[name] = _from_env(name, raw)
        values.update(overrides)
        values = {name: _units(name, value) for name, value in values.items()}
        try:
            settings = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        return settings._checked(explicit=set(values))

    def _checked(self, explicit: set[str]) -> Settings:
        """What one field's type cannot say: regexes compile, intervals agree."""
        for pattern in self.progress_patterns:
            try:
                re.compile(pattern.encode(), re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(
                    _named("progress_patterns", f"bad regular expression {pattern!r}: {exc}")
                ) from None
        for name, argv in self.languages.items():
            if not argv:
                raise ConfigError(_named("languages", f"language {name!r} has an empty command"))
        changes: dict[str, float] = {}
        if self.env == "development" and "flush_interval" not in explicit:
            changes["flush_interval"] = 0.1
        interval = changes.get("flush_interval", self.flush_interval)
        if self.idle_flush_delay > interval:
            changes["idle_flush_delay"] = interval
        return msgspec.structs.replace(self, **changes) if changes else self


#: Settings whose environment value is JSON (lists and maps).
_JSON_FIELDS = frozenset({"progress_patterns", "languages", "env_allowlist"})


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is a number of seconds above 0 and at most :data:`MAX_TIMEOUT`.

    ``inf``, ``1e308``, ``nan`` and negative numbers are refused with a
    :class:`ConfigError`: a timer that far away overflows the clocks it is set on.
    """
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:  # nan fails both
        raise ConfigError(
            f"timeout must be above 0 and at most {MAX_TIMEOUT:.0f} seconds (366 days), "
            f"not {timeout}"
        )
    return timeout


def _from_env(name: str, raw: str) -> Any:
    if name in _JSON_FIELDS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                _named(name, f"not valid JSON ({exc.msg}); lists and maps are given as JSON")
            ) from None
    return None if raw == "" else raw


#: Byte counts: also accept ``64MiB``, ``1GB`` (see outspool.units).
SIZE_FIELDS = frozenset(
    {
        "max_buffer_size",
        "max_inline_output",
        "max_chunk_size",
        "max_output",
        "max_pending_bytes",
        "read_size",
        "progress_scan_bytes",
        "retention_max_size",
    }
)
#: Durations: also accept ``30d``, ``12h``, ``10m``.
DURATION_FIELDS = frozenset({"retention_max_age", "retention_interval"})


def _units(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        if name in SIZE_FIELDS:
            return parse_size(value)
        if name in DURATION_FIELDS:
            return parse_duration(value)
    except ConfigError as exc:
        raise ConfigError(_named(name, str(exc))) from None
    return value


def _named(name: str, problem: str) -> str:
    return f"invalid setting {name} ({ENV_PREFIX}{name.upper()}): {problem}"


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    found = re.search(r"at `\$\.(\w+)", text)
    if found is None:
        return f"invalid settings: {text}"
    return _named(found.group(1), text[: found.start()].rstrip(" -"))
