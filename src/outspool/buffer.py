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

Bytes of a stream past its output limit (the sliding *tail*, see
:mod:`outspool.window`) are appended with ``tail=True``: they do not make the
buffer due by size or lines (most of them will be dropped anyway), only by
age after ``tail_flush_delay``, and :meth:`drop_tail` discards the oldest of
them while they are still pending, so a runaway stream costs neither memory
nor database writes beyond its window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from outspool.models import Stream


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """When a buffer must be handed to the writer."""

    flush_interval: float = 1.0
    max_buffer_size: int = 10 * 1024
    max_buffer_lines: int = 100
    idle_flush_delay: float = 0.005
    #: Tail bytes (a stream past its limit) wait this long, so a flood commits a few times a second.
    tail_flush_delay: float = 0.05


class OutputBuffer:
    """Pending output of one execution: ``(stream, bytes)`` reads in arrival order."""

    __slots__ = (
        "_holes",
        "_lines",
        "_policy",
        "_segments",
        "_size",
        "_stamps",
        "_tail_size",
        "_tails",
        "_trimmed",
        "first_pending_at",
    )

    def __init__(self, policy: FlushPolicy) -> None:
        self._policy = policy
        self._segments: list[tuple[Stream, bytes]] = []
        self._stamps: list[int] = []  # wall-clock ms of each read (outspool.linetimes)
        self._size = 0
        self._lines = 0
        self._tails: dict[Stream, deque[int]] = {Stream.STDOUT: deque(), Stream.STDERR: deque()}
        self._tail_size = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self._holes = False  # drop_tail emptied some segments
        self._trimmed: dict[int, int] = {}  # segment -> bytes drop_tail cut from its front
        self.first_pending_at: float | None = None

    @property
    def size(self) -> int:
        """Bytes pending."""
        return self._size

    @property
    def lines(self) -> int:
        """Newlines pending (counted only while the size alone does not make it due)."""
        return self._lines

    @property
    def head_size(self) -> int:
        """Bytes pending that are not tail bytes (what the size trigger looks at)."""
        return self._size - self._tail_size[Stream.STDOUT] - self._tail_size[Stream.STDERR]

    def append(
        self, stream: Stream, data: bytes, now: float, ms: int = 0, *, tail: bool = False
    ) -> None:
        """Add bytes read from ``stream`` at wall-clock ``ms`` (kept by reference: the caller
        must not mutate them); ``now`` is the policy's clock.

        ``tail``: the bytes lie past the stream's head (see :meth:`drop_tail`).
        """
        if not data:
            return
        if tail:
            self._tails[stream].append(len(self._segments))
            self._tail_size[stream] += len(data)
        elif self.head_size + len(data) <= self._policy.max_buffer_size:
            self._lines += data.count(b"\n")  # past the size trigger lines cannot matter
        self._segments.append((stream, data))
        self._stamps.append(ms)
        self._size += len(data)
        if self.first_pending_at is None:
            self.first_pending_at = now

    def drop_tail(self, stream: Stream, keep: int) -> int:
        """Discard the oldest pending tail bytes of ``stream`` beyond the newest ``keep``.

        Returns how many were dropped. What remains of the stream's tail is
        contiguous and ends with the newest byte appended.
        """
        excess = self._tail_size[stream] - keep
        dropped = 0
        tails = self._tails[stream]
        while excess > 0:
            index = tails[0]
            done = self._trimmed.get(index, 0)
            left = len(self._segments[index][1]) - done
            cut = min(excess, left)
            if cut == left:  # dropped whole
                self._segments[index] = (stream, b"")
                self._trimmed.pop(index, None)
                tails.popleft()
            else:  # cut when taken: most reads are dropped whole before, and never copied
                self._trimmed[index] = done + cut
            excess -= cut
            dropped += cut
        self._tail_size[stream] -= dropped
        self._size -= dropped
        self._holes = self._holes or dropped > 0
        return dropped

    def deadline(self, writer_idle: bool = True) -> float | None:
        """When the pending output becomes due by time alone (None if empty)."""
        if self.first_pending_at is None:
            return None
        policy = self._policy
        wait = policy.flush_interval
        if writer_idle:
            delay = policy.idle_flush_delay
            if not self.head_size:
                delay = max(delay, policy.tail_flush_delay)
            wait = min(wait, delay)
        return self.first_pending_at + wait

    def due(self, now: float, writer_idle: bool = True) -> bool:
        """True when this buffer should be flushed now."""
        if self.first_pending_at is None:
            return False
        if (
            self.head_size > self._policy.max_buffer_size
            or self._lines > self._policy.max_buffer_lines
        ):
            return True
        deadline = self.deadline(writer_idle)
        return deadline is not None and now >= deadline

    def take(self) -> list[tuple[Stream, bytes]]:
        """Hand over everything pending and start empty (atomic under the caller's lock)."""
        return self.take_timed()[0]

    def take_timed(self) -> tuple[list[tuple[Stream, bytes]], list[int]]:
        """Like :meth:`take`, with the ms each read arrived at (one per segment)."""
        segments, self._segments = self._segments, []
        stamps, self._stamps = self._stamps, []
        for index, cut in self._trimmed.items():
            stream, data = segments[index]
            segments[index] = (stream, data[cut:])
        self._trimmed.clear()
        if self._holes:  # reads drop_tail emptied whole go, with their times
            kept = [i for i, (_, data) in enumerate(segments) if data]
            segments = [segments[i] for i in kept]
            stamps = [stamps[i] for i in kept]
            self._holes = False
        self._size = 0
        self._lines = 0
        for stream in self._tails:
            self._tails[stream].clear()
            self._tail_size[stream] = 0
        self.first_pending_at = None
        return segments, stamps
