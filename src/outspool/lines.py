"""Stored output as lines, each with the time it was read and its stream.

A line is a piece of the selected byte sequence (one stream, or both merged in
arrival order, exactly what ``outspool logs`` prints) ending with ``\\n``, or
the unfinished last piece. Its time is when its first byte was read
(:mod:`outspool.linetimes`), its stream that byte's stream, and its number
counts from 1 at the first line read. Lines are cut as chunks arrive, so an
execution is never held whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from outspool.codec import decode
from outspool.follow import chunk_start, iter_chunks, read_range
from outspool.linetimes import Timeline, base_ms
from outspool.models import Chunk, Stream
from outspool.store.base import Store
from outspool.when import ms_from


@dataclass(frozen=True, slots=True)
class Line:
    """One line of output."""

    number: int  #: 1 for the first line read
    ms: int  #: when its first byte was read, in ms since the epoch
    stream: Stream  #: the stream of its first byte
    data: bytes  #: without the ending newline
    ended: bool  #: False for an unfinished last line
    #: Not a line: this many bytes were not kept here (an output limit's gap); no data.
    dropped: int = 0

    @property
    def time(self) -> float:
        return self.ms / 1000


class LineSplitter:
    """Cuts chunks of one stream (None: merged) into lines, from byte ``offset`` on;
    ``mid_line``: that byte is inside a line, whose rest is skipped."""

    def __init__(self, stream: Stream | None, offset: int = 0, mid_line: bool = False) -> None:
        self.stream = stream
        self.offset = offset  # the next byte of the stream to take
        self.number = 0
        self._skipping = mid_line
        self._partial = bytearray()
        self._partial_at: tuple[int, Stream] | None = None

    def feed(self, chunk: Chunk) -> list[Line]:
        """The lines that this chunk completes. Where bytes were not kept before it (an
        output limit's gap), an unfinished line ends and a ``dropped`` marker follows."""
        data = chunk.data(self.stream)
        start = chunk_start(chunk, self.stream)
        skip = max(0, self.offset - start)
        if skip >= len(data):
            return []
        timeline = Timeline(chunk, self.stream)
        out: list[Line] = []
        if start > self.offset:
            if self._partial_at is not None:
                out.append(self._take(ended=False))
            ms, stream = timeline.at(0)
            out.append(Line(self.number, ms, stream, b"", True, start - self.offset))
        self.offset = start + len(data)
        pos = skip
        if self._skipping:
            end = data.find(b"\n", pos)
            if end < 0:
                return out
            self._skipping, pos = False, end + 1
        while pos < len(data):
            if self._partial_at is None:
                self._partial_at = timeline.at(pos)
            end = data.find(b"\n", pos)
            if end < 0:
                self._partial += data[pos:]
                break
            self._partial += data[pos:end]
            out.append(self._take(ended=True))
            pos = end + 1
        return out

    def finish(self) -> Line | None:
        """The unfinished last line, if any."""
        return self._take(ended=False) if self._partial_at is not None else None

    def ended_by(self, chunk: Chunk, until: float) -> bool:
        """True when, after ``chunk``, no line read before ``until`` can still come: the
        chunk was first read at or after it (later chunks were read later still) and no
        line begun before it is unfinished."""
        high = ms_from(until)
        if base_ms(chunk) < high:
            return False
        return self._partial_at is None or self._partial_at[0] >= high

    def _take(self, ended: bool) -> Line:
        assert self._partial_at is not None
        ms, stream = self._partial_at
        self.number += 1
        line = Line(self.number, ms, stream, bytes(self._partial), ended)
        self._partial.clear()
        self._partial_at = None
        return line


def split(chunks: Iterable[Chunk], stream: Stream | None, offset: int = 0) -> Iterator[Line]:
    """Every line of ``chunks`` (in order) from byte ``offset`` of the stream."""
    splitter = LineSplitter(stream, offset)
    for chunk in chunks:
        yield from splitter.feed(chunk)
    last = splitter.finish()
    if last is not None:
        yield last


def iter_lines(
    store: Store,
    execution_id: str,
    stream: Stream | None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[Line]:
    """The stored lines of an execution read at or after ``since`` and before ``until``
    (epoch seconds; None: open), in order, reading only the chunks that can hold them."""
    offset, mid_line = (
        (0, False) if since is None else since_start(store, execution_id, stream, since)
    )
    first = store.chunk_containing(execution_id, stream, offset) if offset else None
    splitter = LineSplitter(stream, offset, mid_line)
    for record in iter_chunks(store, execution_id, -1 if first is None else first - 1):
        chunk = decode(record)
        yield from between(splitter.feed(chunk), since, until)
        if until is not None and splitter.ended_by(chunk, until):
            return
    last = splitter.finish()
    if last is not None:
        yield from between([last], since, until)


def since_start(
    store: Store, execution_id: str, stream: Stream | None, since: float
) -> tuple[int, bool]:
    """Where the lines read at or after ``since`` can begin: ``(offset, mid_line)``.

    ``offset`` is where the last chunk first read before ``since`` starts in the stream:
    every byte before it was read before ``since`` too, so reading can start there instead
    of at the first chunk. ``mid_line`` is True when a line is unfinished at ``offset``:
    it began earlier, so before ``since``, and is skipped (LineSplitter's ``mid_line``).
    Output with a gap (an output limit dropped bytes) is read from its start: the gap's
    marker and the line it cut end belong to the window as a full read finds them, and
    the limit bounds what is kept."""
    # chunk times are whole milliseconds: "before the millisecond ms_from(since)"
    found = store.offsets_before(execution_id, (ms_from(since) - 0.5) / 1000)
    if found is None:
        return 0, False
    ex = store.get(execution_id)  # read after the chunk: a gap before it is counted here
    if ex.stdout_dropped or ex.stderr_dropped:
        return 0, False
    stdout_offset, stderr_offset = found
    offset = stdout_offset + stderr_offset
    if stream is not None:
        offset = stdout_offset if stream is Stream.STDOUT else stderr_offset
    if offset == 0:
        return 0, False
    return offset, read_range(store, execution_id, stream, offset - 1, 1).data != b"\n"


def between(lines: Iterable[Line], since: float | None, until: float | None) -> Iterator[Line]:
    """Lines read at or after ``since`` and before ``until`` (epoch seconds; None: open)."""
    low = None if since is None else ms_from(since)
    high = None if until is None else ms_from(until)
    for line in lines:
        if low is not None and line.ms < low:
            continue
        if high is not None and line.ms >= high:
            continue
        yield line


def line_starts(
    store: Store, execution_id: str, stream: Stream | None, offset: int, data: bytes
) -> list[tuple[int, int]]:
    """``(position in data, ms)`` for the first byte of ``data`` (stored from ``offset``)
    and for every line start after it: the times of a byte range."""
    if not data:
        return []
    wanted = [0, *(i + 1 for i in _newlines(data) if i + 1 < len(data))]
    out: list[tuple[int, int]] = []
    first = store.chunk_containing(execution_id, stream, offset)
    after = -1 if first is None else first - 1
    w = 0
    for record in iter_chunks(store, execution_id, after):
        chunk = decode(record)
        start = chunk_start(chunk, stream)
        size = len(chunk.data(stream))
        if not size:
            continue
        timeline = Timeline(chunk, stream)
        while w < len(wanted) and offset + wanted[w] < start + size:
            out.append((wanted[w], timeline.at(offset + wanted[w] - start)[0]))
            w += 1
        if w == len(wanted):
            break
    return out


def _newlines(data: bytes) -> Iterator[int]:
    pos = data.find(b"\n")
    while pos >= 0:
        yield pos
        pos = data.find(b"\n", pos + 1)
