"""The flush policy of the design document, fixed: pure, with the clock injected.

An :class:`OutputBuffer` holds one execution's output that has not been committed
yet, as the arrival-ordered reads of either stream (kept as read, never copied).
It is *due* for a flush when it holds more than ``max_buffer_size`` bytes or
``max_buffer_lines`` lines, or when its oldest byte has waited ``flush_interval``
seconds. When the writer is
idle it does not wait that long: anything pending becomes due after
``idle_flush_delay`` (a few milliseconds of batching).

Unlike the sketch, :meth:`take` hands over the pending segments and starts a new
list in one step, so output arriving while a flush is in flight is kept for the
next flush instead of being cleared with the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

from outspool.models import Stream


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When a buffer must be handed to the writer."""

    flush_interval: float = 1.0
    max_buffer_size: int = 10 * 1024
    max_buffer_lines: int = 100
    idle_flush_delay: float = 0.005


class OutputBuffer:
    """Pending output of one execution: ``(stream, bytes)`` reads in arrival order."""

    __slots__ = ("_lines", "_policy", "_segments", "_size", "_stamps", "first_pending_at")

    def __init__(self, policy: FlushPolicy) -> None:
        self._policy = policy
        self._segments: list[tuple[Stream, bytes]] = []
        self._stamps: list[int] = []  # wall-clock ms of each read (outspool.linetimes)
        self._size = 0
        self._lines = 0
        self.first_pending_at: float | None = None

    @property
    def size(self) -> int:
        """Bytes pending."""
        return self._size

    @property
    def lines(self) -> int:
        """Newlines pending (counted only while the size alone does not make it due)."""
        return self._lines

    def append(self, stream: Stream, data: bytes, now: float, ms: int = 0) -> None:
        """Add bytes read from ``stream`` at wall-clock ``ms`` (kept by reference: the caller
        must not mutate them); ``now`` is the policy's clock."""
        if not data:
            return
        self._segments.append((stream, data))
        self._stamps.append(ms)
        if self._size <= self._policy.max_buffer_size:  # past it, lines cannot matter
            self._lines += data.count(b"\n")
        self._size += len(data)
        if self.first_pending_at is None:
            self.first_pending_at = now

    def deadline(self, writer_idle: bool = True) -> float | None:
        """When the pending output becomes due by time alone (None if empty)."""
        if self.first_pending_at is None:
            return None
        wait = self._policy.flush_interval
        if writer_idle:
            wait = min(wait, self._policy.idle_flush_delay)
        return self.first_pending_at + wait

    def due(self, now: float, writer_idle: bool = True) -> bool:
        """True when this buffer should be flushed now."""
        if self.first_pending_at is None:
            return False
        if self._size > self._policy.max_buffer_size or self._lines > self._policy.max_buffer_lines:
            return True
        deadline = self.deadline(writer_idle)
        return deadline is not None and now >= deadline

    def take(self) -> list[tuple[Stream, bytes]]:
        """Hand over everything pending and start empty (atomic under the caller's lock)."""
        return self.take_timed()[0]

    def take_timed(self) -> tuple[list[tuple[Stream, bytes]], list[int]]:
        """Like :meth:`take`, with the ms each read arrived at."""
        segments, self._segments = self._segments, []
        stamps, self._stamps = self._stamps, []
        self._size = 0
        self._lines = 0
        self.first_pending_at = None
        return segments, stamps
