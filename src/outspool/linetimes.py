"""When each byte was read, stored compactly beside a chunk (format 6).

The writer notes the wall-clock time, in milliseconds, of every read. A chunk's
``timestamp`` is the time of its first read; its ``line_times`` blob lists the
reads as *groups* of ``(length, ms)`` in arrival order (both streams merged),
consecutive reads within the same millisecond merged into one group. The blob is
unsigned varints, ``length`` then the millisecond delta from the previous group
(the first from the chunk's timestamp); times never go backwards within an
execution because the writer clamps them. A chunk whose bytes were all read in
its first millisecond has no blob at all, so a trickle of lines costs nothing,
and bulk output costs a few bytes per read (reads are up to ``read_size``).

A line's time is the time of the read that brought its first byte.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from outspool.errors import StoreError
from outspool.models import Chunk, Stream

#: ``(length, ms)``: ``length`` bytes of the merged stream read at ``ms`` since the epoch.
Group = tuple[int, int]


def group(lengths: Sequence[int], stamps: Sequence[int]) -> list[Group]:
    """Reads (lengths and ms, in order) as groups, merging reads of the same millisecond."""
    groups: list[Group] = []
    for length, ms in zip(lengths, stamps, strict=True):
        if groups and groups[-1][1] == ms:
            groups[-1] = (groups[-1][0] + length, ms)
        elif length:
            groups.append((length, ms))
    return groups


def encode(groups: Sequence[Group]) -> tuple[int, bytes | None]:
    """The chunk's base ms (its first read) and the blob (None when one group covers all)."""
    if not groups:
        raise ValueError("a chunk has at least one read")
    base = groups[0][1]
    if len(groups) == 1:
        return base, None
    out = bytearray()
    previous = base
    for length, ms in groups:
        _varint(out, length)
        _varint(out, ms - previous)
        previous = ms
    return base, bytes(out)


def decode(base: int, blob: bytes | None, total: int) -> tuple[Group, ...]:
    """The groups of a chunk of ``total`` merged bytes; StoreError if the blob disagrees."""
    if blob is None:
        return ((total, base),)
    values = _unvarints(blob)
    if len(values) % 2:
        raise StoreError("damaged line times: odd number of values")
    groups: list[Group] = []
    ms = base
    for i in range(0, len(values), 2):
        ms += values[i + 1]
        groups.append((values[i], ms))
    if sum(length for length, _ in groups) != total:
        raise StoreError("damaged line times: lengths do not add up to the chunk")
    return tuple(groups)


def base_ms(chunk: Chunk) -> int:
    """The chunk's timestamp as integer milliseconds."""
    return round(chunk.timestamp * 1000)


class Timeline:
    """Where, in one chunk's bytes of a stream (None: merged), each read starts: its ms and
    stream. ``at(pos)`` answers for the byte at ``pos``."""

    __slots__ = ("_ms", "_positions", "_streams")

    def __init__(self, chunk: Chunk, stream: Stream | None) -> None:
        groups = chunk.times or ((len(chunk.stdout) + len(chunk.stderr), base_ms(chunk)),)
        starts = [0]
        for length, _ in groups[:-1]:
            starts.append(starts[-1] + length)
        self._positions: list[int] = []
        self._ms: list[int] = []
        self._streams: list[Stream] = []
        merged = selected = 0
        for piece_stream, length in chunk.runs:
            end = merged + length
            gi = bisect_right(starts, merged) - 1
            while merged < end:
                stop = min(end, starts[gi + 1]) if gi + 1 < len(starts) else end
                if stream is None or piece_stream is stream:
                    self._mark(selected, groups[gi][1], piece_stream)
                    selected += stop - merged
                merged = stop
                gi += 1

    def _mark(self, pos: int, ms: int, stream: Stream) -> None:
        if self._positions and self._positions[-1] == pos:
            self._ms[-1], self._streams[-1] = ms, stream
            return
        if self._ms and self._ms[-1] == ms and self._streams[-1] is stream:
            return
        self._positions.append(pos)
        self._ms.append(ms)
        self._streams.append(stream)

    def at(self, pos: int) -> tuple[int, Stream]:
        """The ms and stream of the byte at ``pos`` (clamped to the chunk)."""
        i = max(0, bisect_right(self._positions, pos) - 1)
        if not self._ms:
            raise StoreError("a timeline of an empty chunk")
        return self._ms[i], self._streams[i]

    @property
    def last_ms(self) -> int:
        return self._ms[-1] if self._ms else 0


def _varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("line times must not go backwards")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _unvarints(blob: bytes) -> list[int]:
    values: list[int] = []
    value = shift = 0
    for byte in blob:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            values.append(value)
            value = shift = 0
    if shift:
        raise StoreError("damaged line times: truncated value")
    return values
