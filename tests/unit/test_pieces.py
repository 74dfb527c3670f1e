"""Line counting over tagged pieces, checked against a byte-by-byte reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outspool.models import Stream
from outspool.pieces import LineCounter, Piece

newlines = st.binary(max_size=12).map(lambda b: b.replace(b"a", b"\n"))  # plenty of them
pieces = st.lists(st.tuples(st.sampled_from(list(Stream)), newlines), max_size=20)


def reference(tagged: list[tuple[Stream, bytes]]) -> tuple[int, dict[Stream, int]]:
    """Lines started, and where each open line began, one byte at a time."""
    lines = 0
    open_at: dict[Stream, int] = {}
    pos = 0
    for stream, data in tagged:
        for byte in data:
            if stream not in open_at:
                lines += 1
                open_at[stream] = pos
            if byte == ord("\n"):
                del open_at[stream]
            pos += 1
    return lines, open_at


@given(pieces)
def test_counts_lines_like_the_page(tagged: list[tuple[Stream, bytes]]) -> None:
    counter = LineCounter()
    pos = 0
    for stream, data in tagged:
        counter.feed(Piece(pos, stream, data))
        pos += len(data)
    assert (counter.lines, counter.open) == reference(tagged)


def test_an_empty_line_is_a_line() -> None:
    counter = LineCounter()
    counter.feed(Piece(0, Stream.STDOUT, b"\n\n"))
    assert (counter.lines, counter.open) == (2, {})
