"""Domain objects: frozen dataclasses that hold no connection and do no I/O."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Status(enum.StrEnum):
    """Where an execution stands."""

    QUEUED = "queued"  #: submitted, waiting for a worker
    RUNNING = "running"  #: the program is running and its output is being captured
    SUCCEEDED = "succeeded"  #: the program exited with code 0
    FAILED = "failed"  #: the program exited non-zero or was killed by a signal
    TIMED_OUT = "timed_out"  #: stopped because it ran past its timeout
    CANCELLED = "cancelled"  #: stopped (or never started) on request
    LOST = "lost"  #: the process capturing it died; output stored so far is kept
    DAMAGED = "damaged"  #: its stored record cannot be read whole (see ``Execution.damage``)

    @property
    def finished(self) -> bool:
        """True for the final states."""
        return self not in (Status.QUEUED, Status.RUNNING)


class Stream(enum.IntEnum):
    """An output stream; the value is what the store records."""

    STDOUT = 1
    STDERR = 2

    @classmethod
    def parse(cls, name: str) -> Stream:
        return cls[name.upper()]


def iso(ts: float | None) -> str | None:
    """Render a stored epoch timestamp as ISO 8601 in UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{type(value).__name__} where text belongs")


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise TypeError(f"{value!r:.40} is not a number")


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise TypeError(f"{value!r:.40} is not a count")


def _whole(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"{value!r:.40} is not a whole number")


def _maybe(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else read(value)


def _argv(value: Any) -> tuple[str, ...]:
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(arg, str) for arg in parsed):
        raise TypeError("not a list of strings")
    return tuple(parsed)


def _map(value: Any) -> dict[str, str]:
    parsed = json.loads(value) if value else {}
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise TypeError("not a map of strings")
    return {str(k): v for k, v in parsed.items()}


#: How each column of an ``executions`` row is read, and what a damaged one becomes.
_COLUMNS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "status": (Status, Status.DAMAGED),
    "command": (_argv, ()),
    "name": (_text, None),
    "language": (_text, None),
    "code": (_text, None),
    "cwd": (_text, None),
    "env": (_map, {}),
    "timeout": (_maybe(_number), None),
    "pty": (bool, False),
    "exit_code": (_maybe(_whole), None),
    "signal": (_maybe(_whole), None),
    "reason": (_text, None),
    "pid": (_maybe(_whole), None),
    "worker_id": (_text, None),
    "created_at": (_number, 0.0),
    "started_at": (_maybe(_number), None),
    "finished_at": (_maybe(_number), None),
    "last_output_at": (_maybe(_number), None),
    "stdout_size": (_count, 0),
    "stderr_size": (_count, 0),
    "output_truncated": (bool, False),
    "progress": (_text, None),
    "progress_percent": (_maybe(_number), None),
    "chunk_count": (_count, 0),
    "cancel_requested": (bool, False),
    "cpu_time": (_maybe(_number), None),
    "memory": (_maybe(_count), None),
    "max_processes": (_maybe(_count), None),
    "max_file_size": (_maybe(_count), None),
    "network": (bool, False),
    "secrets": (_map, {}),
    "labels": (_map, {}),
    "stdout_dropped": (_count, 0),
    "stderr_dropped": (_count, 0),
    "max_output": (_maybe(_count), None),
}


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of one program, as stored."""

    id: str
    status: Status
    command: tuple[str, ...]
    name: str | None = None
    language: str | None = None
    code: str | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    pty: bool = False
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    pid: int | None = None
    worker_id: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    last_output_at: float | None = None
    stdout_size: int = 0
    stderr_size: int = 0
    output_truncated: bool = False
    progress: str | None = None
    progress_percent: float | None = None
    chunk_count: int = 0
    cancel_requested: bool = False
    cpu_time: float | None = None
    memory: int | None = None
    max_processes: int | None = None
    max_file_size: int | None = None
    network: bool = False
    #: Until it ends; never shown (not in :meth:`to_json`, not in ``repr``).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    stdout_dropped: int = 0  #: bytes of stdout not kept (past ``max_output``)
    stderr_dropped: int = 0
    max_output: int | None = None  #: bytes kept per stream, as the job asked
    damage: str | None = None  #: what of the stored row could not be read (status ``damaged``)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Execution:
        """Build from a row of the ``executions`` table (any backend).

        A damaged row never raises: a column that cannot be read (an unknown
        status, a command that is not JSON, a timestamp stored as text...) gets
        its default, the status becomes ``damaged`` and :attr:`damage` says what
        was wrong, so listings show it and go on with the rest.
        """
        values: dict[str, Any] = {"id": str(row["id"])}
        problems: list[str] = []
        for name, (read, default) in _COLUMNS.items():
            try:
                values[name] = read(row[name])
            except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
                values[name] = default
                problems.append(f"{name} ({exc})")
        if problems:
            values["status"] = Status.DAMAGED
            values["damage"] = "unreadable " + "; ".join(problems)
        return cls(**values)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, once it has ended."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (``outspool show --json`` and the HTTP API)."""
        percent = self.progress_percent
        return {
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "status": self.status.value,
            "damage": self.damage,
            "command": list(self.command),
            "language": self.language,
            "cwd": self.cwd,
            "timeout": self.timeout,
            "pty": self.pty,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "reason": self.reason,
            "pid": self.pid,
            "worker_id": self.worker_id,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "last_output_at": iso(self.last_output_at),
            "duration": None if self.duration is None else round(self.duration, 3),
            "stdout_size": self.stdout_size,
            "stderr_size": self.stderr_size,
            "stdout_dropped": self.stdout_dropped,
            "stderr_dropped": self.stderr_dropped,
            "max_output": self.max_output,
            "output_truncated": self.output_truncated,
            "progress": self.progress,
            "progress_percent": percent if percent is None or math.isfinite(percent) else None,
            "cancel_requested": self.cancel_requested,
            "cpu_time": self.cpu_time,
            "memory": self.memory,
            "max_processes": self.max_processes,
            "max_file_size": self.max_file_size,
            "network": self.network,
        }


@dataclass(frozen=True, slots=True)
class Chunk:
    """One committed piece of an execution's output, decoded.

    ``runs`` tells how the two streams interleave inside the chunk: a sequence of
    ``(stream, length)`` in arrival order. Offsets are where the chunk's bytes
    start within each stream.
    """

    chunk_index: int
    stdout_offset: int
    stderr_offset: int
    stdout: bytes
    stderr: bytes
    runs: tuple[tuple[Stream, int], ...]
    timestamp: float
    #: ``(length, ms)`` groups of the merged bytes by read time (outspool.linetimes);
    #: empty: every byte at ``timestamp``.
    times: tuple[tuple[int, int], ...] = ()

    @property
    def all_offset(self) -> int:
        """Where this chunk starts in the merged (``all``) stream."""
        return self.stdout_offset + self.stderr_offset

    def data(self, stream: Stream | None) -> bytes:
        """This chunk's bytes of one stream, or of both in arrival order (None)."""
        if stream is Stream.STDOUT:
            return self.stdout
        if stream is Stream.STDERR:
            return self.stderr
        return b"".join(self.pieces())

    def pieces(self) -> list[bytes]:
        """The chunk's bytes as arrival-ordered pieces of either stream."""
        out: list[bytes] = []
        pos = {Stream.STDOUT: 0, Stream.STDERR: 0}
        src = {Stream.STDOUT: self.stdout, Stream.STDERR: self.stderr}
        for stream, length in self.runs:
            start = pos[stream]
            out.append(src[stream][start : start + length])
            pos[stream] = start + length
        return out

    def tagged(self) -> list[tuple[Stream, bytes]]:
        """Like :meth:`pieces`, each piece with its stream."""
        return [(s, p) for (s, _), p in zip(self.runs, self.pieces(), strict=True)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an execution ended."""

    status: Status
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
