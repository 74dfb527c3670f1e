"""One settings object: defaults, environment overrides (``OUTSPOOL_*``), validation.

Every field can be set from the environment as ``OUTSPOOL_<FIELD>`` (lists and
maps as JSON). ``OUTSPOOL_ENV=development`` gives the design document's 100 ms
flush interval unless ``OUTSPOOL_FLUSH_INTERVAL`` says otherwise. An invalid value
or an unknown ``OUTSPOOL_*`` variable is refused with a :class:`ConfigError`
naming the setting.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from outspool.errors import ConfigError

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

DEFAULT_PROGRESS_PATTERNS = (r"\d+%", r"step \d+", r"complete", r"error", r"warning")

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


class Settings(BaseSettings):
    """All of outspool's tunables. Construct once at start; it is immutable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    # Where the store lives: a path, sqlite:///path or postgresql://...
    db: str | None = None
    #: production or development (development flushes every 100 ms).
    env: Literal["production", "development"] = "production"

    # --- the design document's buffer policy ---------------------------------
    #: Upper bound, in seconds, on how long output waits in memory before it is committed.
    flush_interval: float = Field(1.0, gt=0, le=3600)
    #: A buffer holding more than this many bytes is flushed at once.
    max_buffer_size: int = Field(10 * KiB, gt=0)
    #: A buffer holding more than this many lines is flushed at once.
    max_buffer_lines: int = Field(100, gt=0)
    #: Streams up to this size are also kept inline in the executions row when done.
    max_inline_output: int = Field(1 * MiB, ge=0)
    #: Regular expressions (case-insensitive) for lines that update ``progress``.
    progress_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_PROGRESS_PATTERNS))

    # --- what fixes the design document's defects ------------------------------
    #: When the writer is idle, output is committed after this short delay (seconds).
    idle_flush_delay: float = Field(0.005, ge=0)
    #: A chunk row closes once it holds this many bytes (before compression) plus one read.
    max_chunk_size: int = Field(2 * MiB, ge=4 * KiB)
    #: Memory bound: above this many pending bytes per process, pipes stop being read.
    max_pending_bytes: int = Field(8 * MiB, ge=64 * KiB)
    #: Bytes asked of the pipe per read; pipes are enlarged to this size when allowed.
    read_size: int = Field(1 * MiB, ge=4 * KiB, le=64 * MiB)
    #: Chunk compression: zstd when it makes a chunk smaller, or none.
    compression: Literal["zstd", "none"] = "zstd"
    #: zstd level (1 is fastest; higher is smaller and slower).
    compression_level: int = Field(1, ge=-7, le=22)
    #: How many recent lines of a running execution are kept at hand in memory.
    recent_lines: int = Field(100, ge=1, le=100_000)
    #: Only this many trailing bytes of each read are scanned for progress lines.
    progress_scan_bytes: int = Field(8 * KiB, ge=256)
    #: Seconds a database call waits on a lock held by another process.
    busy_timeout: float = Field(30.0, ge=0)
    #: How often (seconds) followers look for new output on backends that cannot push.
    poll_interval: float = Field(0.01, gt=0, le=10)

    # --- process handling ------------------------------------------------------
    #: Set PYTHONUNBUFFERED=1 in the program's environment, so Python output shows live.
    pythonunbuffered: bool = True
    #: Seconds between SIGTERM and SIGKILL when a program is stopped.
    kill_grace: float = Field(5.0, ge=0)
    #: Seconds output is still drained after the program exits while a child holds its pipes.
    drain_grace: float = Field(2.0, ge=0)
    #: Language name -> argv prefix for ``--language``/``--code``.
    languages: dict[str, list[str]] = Field(default_factory=default_languages)

    # --- worker ----------------------------------------------------------------
    #: Seconds between a worker's heartbeats.
    heartbeat_interval: float = Field(2.0, gt=0)
    #: A running execution whose worker's heartbeat is older than this is ``lost``.
    heartbeat_timeout: float = Field(30.0, gt=0)
    #: Seconds a shutting-down worker lets running programs finish before stopping them.
    shutdown_grace: float = Field(10.0, ge=0)
    #: Variables a worker passes from its own environment to the programs it runs.
    env_allowlist: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))
    #: Resource limits for programs run by a worker (None: no limit).
    limit_address_space: int | None = Field(None, gt=0)
    limit_cpu_seconds: int | None = Field(None, gt=0)
    limit_file_size: int | None = Field(None, gt=0)
    limit_open_files: int | None = Field(None, gt=0)

    # --- web -------------------------------------------------------------------
    #: Bearer token required by ``outspool serve`` (mandatory off loopback).
    token: str | None = None

    @field_validator("progress_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern.encode(), re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return value

    @field_validator("languages")
    @classmethod
    def _languages_nonempty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, argv in value.items():
            if not argv:
                raise ValueError(f"language {name!r} has an empty command")
        return value

    @model_validator(mode="after")
    def _environment_defaults(self) -> Self:
        if self.env == "development" and "flush_interval" not in self.model_fields_set:
            object.__setattr__(self, "flush_interval", 0.1)
        if self.idle_flush_delay > self.flush_interval:
            object.__setattr__(self, "idle_flush_delay", self.flush_interval)
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read ``OUTSPOOL_*`` from the environment, apply overrides, validate.

        Raises :class:`ConfigError` naming the setting on any invalid value.
        """
        known = {ENV_PREFIX + name.upper() for name in cls.model_fields}
        for key in os.environ:
            if key.startswith(ENV_PREFIX) and key not in known and key not in NON_SETTINGS:
                raise ConfigError(f"{key} is not an outspool setting")
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        except SettingsError as exc:
            raise ConfigError(
                f"invalid setting: {exc} (lists and maps are given as JSON)"
            ) from None


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "settings"
    where = ENV_PREFIX + name.upper()
    return f"invalid setting {name} ({where}): {err['msg']}"
