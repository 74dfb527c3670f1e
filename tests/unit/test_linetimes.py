"""The compact per-read times of a chunk: exact round trip, lines get their first byte's time."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from outspool import linetimes
from outspool.codec import Encoder, decode
from outspool.lines import split
from outspool.models import Stream
from outspool.search import Matcher, Window

OUT, ERR = Stream.STDOUT, Stream.STDERR
reads = st.lists(
    st.tuples(st.sampled_from([OUT, ERR]), st.binary(min_size=1, max_size=40), st.integers(0, 3)),
    min_size=1,
    max_size=30,
)


@given(reads)
def test_each_read_keeps_its_millisecond(script: list[tuple[Stream, bytes, int]]) -> None:
    stamps, ms = [], 1_780_000_000_000
    for _, _, step in script:
        ms += step
        stamps.append(ms)
    segments = [(s, d) for s, d, _ in script]
    chunk = decode(Encoder().encode("ex", 0, (0, 0), segments, 0.0, stamps=stamps))
    assert chunk.data(None) == b"".join(d for _, d in segments)  # bytes untouched
    expanded = [ms for length, ms in chunk.times for _ in range(length)] or [
        linetimes.base_ms(chunk)
    ] * len(chunk.data(None))
    assert expanded == [t for (_, d), t in zip(segments, stamps, strict=True) for _ in d]
    for stream in (OUT, ERR, None):
        timeline = linetimes.Timeline(chunk, stream)
        picked = [(t, s) for (s, d), t in zip(segments, stamps, strict=True) for _ in d]
        if stream is not None:
            picked = [p for p in picked if p[1] is stream]
        assert [timeline.at(i) for i in range(len(picked))] == picked


def test_a_chunk_read_in_one_millisecond_stores_no_blob() -> None:
    record = Encoder().encode("ex", 0, (0, 0), [(OUT, b"a\n"), (ERR, b"b\n")], 9.0, stamps=[5, 5])
    assert record.line_times is None
    assert record.timestamp == 0.005
    bulk = [(OUT, b"x" * 65536)] * 16
    record = Encoder().encode("ex", 0, (0, 0), bulk, 9.0, stamps=list(range(16)))
    assert record.line_times is not None
    assert len(record.line_times) <= 4 * 16  # four bytes per read of 64 KiB


def test_lines_take_the_time_and_stream_of_their_first_byte() -> None:
    first = decode(
        Encoder().encode(
            "ex",
            0,
            (0, 0),
            [(OUT, b"one\ntw"), (ERR, b"E\n"), (OUT, b"o\nthr")],
            0.0,
            stamps=[100, 200, 300],
        )
    )
    second = decode(Encoder().encode("ex", 1, (11, 2), [(OUT, b"ee\n")], 0.0, stamps=[400]))
    lines = list(split([first, second], None))
    assert [(ln.data, ln.ms, ln.stream) for ln in lines] == [
        (b"one", 100, OUT),
        (b"twE", 100, OUT),
        (b"o", 300, OUT),
        (b"three", 300, OUT),
    ]
    assert [ln.data for ln in split([first, second], OUT)] == [b"one", b"two", b"three"]
    assert [ln.number for ln in lines] == [1, 2, 3, 4]


def test_the_matcher_numbers_lines_across_chunks_and_honours_the_window() -> None:
    chunks = [
        decode(Encoder().encode("ex", 0, (0, 0), [(OUT, b"a1\nb2\nc")], 0.0, stamps=[1000])),
        decode(
            Encoder().encode(
                "ex", 1, (7, 0), [(OUT, b"3\nd4\n"), (OUT, b"e5\n")], 0.0, stamps=[2000, 3000]
            )
        ),
    ]

    def grep(pattern: str, window: Window | None = None) -> list[tuple[int, str]]:
        m = Matcher("ex", re.compile(pattern, re.MULTILINE), None, window or Window())
        found = [hit for c in chunks for hit in m.feed(c)] + m.finish()
        return [(hit.line, hit.text) for hit in found]

    assert grep(r"\d") == [(1, "a1"), (2, "b2"), (3, "c3"), (4, "d4"), (5, "e5")]
    assert grep(r"^[ce]") == [(3, "c3"), (5, "e5")]
    assert grep(r"1\sb") == []  # a match across a newline is not a line match
    assert grep(r".", Window.of(2.0, 3.0)) == [(4, "d4")]
    assert grep(r".", Window.of(None, 2.0)) == [(1, "a1"), (2, "b2"), (3, "c3")]
