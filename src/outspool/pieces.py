"""The merged stream read with each piece's stream: what a viewer needs to mark stderr
and number lines.

A *piece* is a run of bytes of one stream at a position in the merged (``all``)
stream. A *line* starts at a stream's first byte and after each newline of that
stream: the lines of stdout and stderr interleave in arrival order but never mix,
which is how the web page shows them. :class:`LineCounter` counts them the way
the page does, so a page that starts reading in the middle can number its lines.

Where an output limit dropped bytes, a piece has no data and says how many
(``dropped``): the page ends that stream's open line there and shows one
marker line, and the counter counts it so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from outspool.codec import decode
from outspool.follow import START, Cursor, continues, reached_end
from outspool.models import Stream
from outspool.store.base import Store

_BATCH = 64  # chunks fetched per query
_WINDOW = 64 << 10  # bytes searched back for a line start


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of one stream, starting at ``start`` in the merged stream; or, with
    ``dropped``, that many bytes of it that were not kept (and no data)."""

    start: int
    stream: Stream
    data: bytes
    dropped: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.data) + self.dropped


@dataclass(slots=True)
class LineCounter:
    """Lines started so far, and where each stream's line still waiting for a newline began."""

    lines: int = 0
    open: dict[Stream, int] = field(default_factory=dict)

    def feed(self, piece: Piece) -> None:
        data = piece.data
        if piece.dropped:  # the stream's open line ends; the marker is a line of its own
            self.open.pop(piece.stream, None)
            self.lines += 1
            return
        if not data:
            return
        if piece.stream not in self.open:
            self.lines += 1
            self.open[piece.stream] = piece.start
        last = data.rfind(b"\n", 0, len(data) - 1)
        if last >= 0:
            self.lines += data.count(b"\n", 0, len(data) - 1)
            self.open[piece.stream] = piece.start + last + 1
        if data.endswith(b"\n"):
            del self.open[piece.stream]


def iter_pieces(store: Store, execution_id: str, offset: int = 0) -> Iterator[Piece]:
    """Stored output from byte ``offset`` of the merged stream on, piece by piece, with a
    ``dropped`` piece where bytes were not kept."""
    first = store.chunk_containing(execution_id, None, offset) if offset else None
    after = -1 if first is None else first - 1
    cursor: Cursor | None = None
    ends = START if after < 0 else None
    while records := store.chunks_after(execution_id, after, _BATCH):
        for record in records:
            after = record.chunk_index
            ends = continues(store, ends, record)
            chunk = decode(record)
            if cursor is None:  # from the first chunk read: what lies before it is not a gap
                cursor = Cursor(None, chunk.stdout_offset, chunk.stderr_offset)
            for gap in cursor.gaps(chunk):  # just before the chunk, in one stream
                start = chunk.all_offset - gap.size
                if chunk.all_offset > offset:
                    skip = max(0, offset - start)
                    yield Piece(start + skip, gap.stream, b"", gap.size - skip)
            pos = chunk.all_offset
            for stream, data in chunk.tagged():
                start, pos = pos, pos + len(data)
                if pos > offset:
                    skip = max(0, offset - start)
                    yield Piece(start + skip, stream, data[skip:])
    reached_end(store, execution_id, ends)


@dataclass(frozen=True, slots=True)
class PieceRange:
    """Pieces read from an offset, where to continue, and whether nothing more is stored."""

    pieces: list[Piece]
    next_offset: int
    eof: bool


def read_pieces(store: Store, execution_id: str, offset: int, limit: int) -> PieceRange:
    """Up to ``limit`` bytes of the merged stream from ``offset``, as tagged pieces."""
    found: list[Piece] = []
    pos = offset
    for piece in iter_pieces(store, execution_id, offset):
        room = offset + limit - pos
        if room <= 0:
            return PieceRange(found, pos, False)
        kept = Piece(piece.start, piece.stream, piece.data[:room], piece.dropped)
        found.append(kept)
        pos = kept.end
    return PieceRange(found, pos, pos < offset + limit)


def count_lines(store: Store, execution_id: str, offset: int) -> LineCounter:
    """The lines started before byte ``offset`` of the merged stream (reads all before it)."""
    counter = LineCounter()
    if offset <= 0:
        return counter
    for piece in iter_pieces(store, execution_id):
        if piece.start >= offset:
            break
        counter.feed(
            Piece(piece.start, piece.stream, piece.data[: offset - piece.start], piece.dropped)
        )
        if piece.end >= offset:
            break
    return counter


def line_boundary(store: Store, execution_id: str, offset: int) -> tuple[int, int]:
    """The nearest offset at or before ``offset`` where no line is open, and how many lines
    start before it: where a viewer can begin reading and number lines correctly."""
    offset = _after_newline(store, execution_id, offset)
    counter = count_lines(store, execution_id, offset)
    while counter.open:  # a line of the other stream is open there: go back to its start
        offset = min(counter.open.values())
        counter = count_lines(store, execution_id, offset)
    return offset, counter.lines


def _after_newline(store: Store, execution_id: str, offset: int) -> int:
    """Just after the last newline in the 64 KiB before ``offset``, else ``offset``."""
    found = offset
    for piece in iter_pieces(store, execution_id, max(0, offset - _WINDOW)):
        if piece.start >= offset:
            break
        newline = piece.data.rfind(b"\n", 0, offset - piece.start)
        if newline >= 0:
            found = piece.start + newline + 1
    return found
