"""Output limits: keep a stream's first half and a sliding last half; count what lies between.

A stream limited to ``L`` bytes keeps its *head*, the offsets ``[0, H)`` with
``H = L // 2``, and its *tail*, the last ``T = L - H`` bytes it wrote,
``[size - T, size)``. Offsets stay the program's own: a gap in the stored
offsets is where bytes were dropped, and every reader sees it as such.

The program is never slowed by this. A :class:`Window` splits each read at
``H``; tail bytes wait in the buffer (``OutputBuffer.append(tail=True)``),
where the oldest are dropped once more than ``T`` are pending; what is
committed goes into chunks that hold nothing but that stream's tail
(:func:`plan`), so the store can delete them whole as the window slides
(:meth:`Window.slide`). When the execution ends, the one chunk straddling
``size - T`` is cut (:meth:`Window.cut`), so the store keeps exactly the
head and the tail. This module is pure: the writer applies its decisions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outspool.models import Stream

Segments = list[tuple[Stream, bytes]]


@dataclass(frozen=True, slots=True)
class Limit:
    """How much of one stream is kept: the first ``head`` bytes and the last ``tail`` bytes."""

    head: int
    tail: int

    @classmethod
    def of(cls, max_output: int) -> Limit | None:
        """The limit for ``max_output`` bytes per stream (``0``: none)."""
        if max_output <= 0:
            return None
        return cls(max_output // 2, max_output - max_output // 2)

    @property
    def total(self) -> int:
        return self.head + self.tail


def effective(requested: int | None, configured: int) -> int:
    """The limit that applies: a job may ask for less than the configured one, never more.

    ``0`` means no limit, so it only wins when both are ``0`` (or nothing is asked).
    """
    if requested is None or requested == 0:
        return configured
    if configured == 0:
        return requested
    return min(requested, configured)


@dataclass(frozen=True, slots=True)
class Planned:
    """One chunk to encode: where its streams start, its reads, and whose tail it holds."""

    offsets: tuple[int, int]
    segments: Segments
    tail: Stream | None  #: set when the chunk holds only this stream's tail bytes


class Window:
    """One stream of one execution under a limit: what to keep, trim and report as dropped."""

    def __init__(self, limit: Limit | None) -> None:
        self.limit = limit
        self.written = 0  #: bytes the program wrote to the stream so far
        self.pending_dropped = 0  #: dropped from the buffer since the last commit was planned
        self._stored: deque[tuple[int, int, int]] = deque()  # tail chunks: index, start, end

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``data``'s head part and tail part (either may be empty); counts it as written."""
        start = self.written
        self.written += len(data)
        if self.limit is None or self.written <= self.limit.head:
            return data, b""
        if start >= self.limit.head:
            return b"", data
        cut = self.limit.head - start
        return data[:cut], data[cut:]

    def is_tail(self, offset: int) -> bool:
        return self.limit is not None and offset >= self.limit.head

    @property
    def dropped(self) -> int:
        """Bytes between the head and the first stored tail byte: never stored, or trimmed."""
        if self.limit is None or not self._stored:
            return 0
        return self._stored[0][1] - self.limit.head

    def stored(self, index: int, start: int, end: int) -> None:
        """A tail chunk covering ``[start, end)`` was committed as chunk ``index``."""
        self._stored.append((index, start, end))

    def slide(self, end: int) -> list[int]:
        """Tail chunks wholly before ``end - T`` (``end``: the stored size): delete them."""
        if self.limit is None:
            return []
        gone: list[int] = []
        while self._stored and self._stored[0][2] <= end - self.limit.tail:
            gone.append(self._stored.popleft()[0])
        return gone

    def cut(self, end: int) -> tuple[int, int, int] | None:
        """At the end: ``(chunk index, chunk start, bytes to cut)`` so the tail is exactly ``T``.

        None when the oldest stored tail chunk starts at ``end - T`` or later.
        Call :meth:`recut` once the shortened chunk is stored.
        """
        if self.limit is None or not self._stored:
            return None
        index, start, _ = self._stored[0]
        keep_from = max(self.limit.head, end - self.limit.tail)
        if start >= keep_from:
            return None
        return index, start, keep_from - start

    def recut(self, start: int) -> None:
        """The oldest tail chunk now starts at ``start``."""
        index, _, end = self._stored[0]
        self._stored[0] = (index, start, end)


def plan(
    segments: Sequence[tuple[Stream, bytes]],
    offsets: tuple[int, int],
    windows: Mapping[Stream, Window],
    max_chunk: int,
) -> tuple[list[Planned], tuple[int, int]]:
    """Group arrival-ordered reads into chunks, keeping each stream's tail in chunks of its own.

    ``offsets`` are where each stream's next byte stands in the program's
    numbering; bytes a window dropped while pending (``pending_dropped``) are
    skipped right before that stream's first tail read, and reset. A chunk
    closes once it reaches ``max_chunk`` bytes (reads are never cut) or when
    the next read belongs to another kind (tail of a stream, or anything else).
    Returns the chunks and the offsets after them.
    """
    pos = {Stream.STDOUT: offsets[0], Stream.STDERR: offsets[1]}
    jumps = {s: w.pending_dropped for s, w in windows.items() if w.pending_dropped}
    planned: list[Planned] = []
    current: Segments = []
    kind: Stream | None = None
    start = (0, 0)
    size = 0
    for stream, data in segments:
        window = windows.get(stream)
        tail = window is not None and window.is_tail(pos[stream])
        if tail:
            pos[stream] += jumps.pop(stream, 0)
        this_kind = stream if tail else None
        if current and (this_kind is not kind or size >= max_chunk):
            planned.append(Planned(start, current, kind))
            current, size = [], 0
        if not current:
            start, kind = (pos[Stream.STDOUT], pos[Stream.STDERR]), this_kind
        current.append((stream, data))
        size += len(data)
        pos[stream] += len(data)
    if current:
        planned.append(Planned(start, current, kind))
    for stream, skipped in jumps.items():  # all its pending tail was dropped (cannot happen
        pos[stream] += skipped  # while a window keeps at least one byte, but stay exact)
    for window in windows.values():
        window.pending_dropped = 0
    return planned, (pos[Stream.STDOUT], pos[Stream.STDERR])
