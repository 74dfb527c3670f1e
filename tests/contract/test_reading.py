"""Reading stored output (ranges, tails, following) against every backend, checked
against the plain bytes: whatever the chunking, the answer is the same slice."""

from __future__ import annotations

import itertools
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outspool.codec import Encoder
from outspool.follow import Follower, read_range, tail
from outspool.jobs import Job
from outspool.lines import iter_lines
from outspool.models import Outcome, Status, Stream
from outspool.search import Window, search
from outspool.store import OutputUpdate, Store, WriteBatch
from tests.contract.test_store import raw_chunk

Pieces = list[tuple[bytes, bytes]]
IDS = itertools.count()  # hypothesis replays examples: every run stores under a new ID
line_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n")
piece = st.tuples(
    st.lists(line_bytes, max_size=4).map(b"".join) | st.binary(max_size=30),
    st.lists(line_bytes, max_size=3).map(b"".join),
).filter(lambda p: bool(p[0] or p[1]))


def store_pieces(store: Store, execution_id: str, pieces: Pieces) -> tuple[bytes, bytes, bytes]:
    store.create(Job(command=("x",)), execution_id, 1.0)
    chunks, out_off, err_off = [], 0, 0
    for index, (out, err) in enumerate(pieces):
        chunks.append(raw_chunk(execution_id, index, (out_off, err_off), out, err))
        out_off += len(out)
        err_off += len(err)
    store.write(
        WriteBatch(chunks, [OutputUpdate(execution_id, out_off, err_off, len(pieces), 2.0)])
    )
    store.finish(execution_id, Outcome(Status.SUCCEEDED, 0), 3.0, None)
    out = b"".join(o for o, _ in pieces)
    err = b"".join(e for _, e in pieces)
    return out, err, b"".join(o + e for o, e in pieces)


def last_lines(data: bytes, n: int) -> bytes:
    body = data[:-1] if data.endswith(b"\n") else data
    lines = body.split(b"\n")
    if n == 0 or not data:
        return b""
    kept = b"\n".join(lines[-n:])
    return kept + (b"\n" if data.endswith(b"\n") else b"")


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@example(pieces=[(b"line start ", b""), (b"continued\nlast\n", b"")], n=2, which=Stream.STDOUT)
@example(pieces=[(b"a\nb", b"e\n"), (b"c\n", b"")], n=2, which=None)
@given(
    pieces=st.lists(piece, min_size=1, max_size=12),
    n=st.integers(0, 30),
    which=st.sampled_from([None, Stream.STDOUT, Stream.STDERR]),
)
def test_tail_is_the_last_lines_whatever_the_chunking(
    store: Store, pieces: Pieces, n: int, which: Stream | None
) -> None:
    execution_id = f"t{next(IDS)}"
    out, err, both = store_pieces(store, execution_id, pieces)
    data = {None: both, Stream.STDOUT: out, Stream.STDERR: err}[which]
    found = tail(store, execution_id, n, which)
    assert found.data == last_lines(data, n)
    assert found.next_offset == len(data)
    assert found.offset == len(data) - len(found.data)


@SETTINGS
@given(
    pieces=st.lists(piece, min_size=1, max_size=12),
    start=st.integers(0, 400),
    limit=st.integers(1, 200),
    which=st.sampled_from([None, Stream.STDOUT, Stream.STDERR]),
)
def test_ranges_and_following_match_the_plain_bytes(
    store: Store, pieces: Pieces, start: int, limit: int, which: Stream | None
) -> None:
    execution_id = f"r{next(IDS)}"
    out, err, both = store_pieces(store, execution_id, pieces)
    data = {None: both, Stream.STDOUT: out, Stream.STDERR: err}[which]
    start = min(start, len(data))
    found = read_range(store, execution_id, which, start, limit)
    assert found.data == data[start : start + limit]
    assert found.next_offset == start + len(found.data)
    follower = Follower(store, execution_id, which, start)
    followed = b"".join(p for _, p in follower if isinstance(p, bytes))
    assert followed == data[start:]


reads = st.lists(
    st.tuples(
        st.sampled_from([Stream.STDOUT, Stream.STDERR]),
        st.sampled_from([b"a", b"bc", b"\n", b"d\n", b"e\nf", b"\ng\nh"]),
        st.integers(0, 2),  # ms after the previous read
    ),
    min_size=1,
    max_size=4,
)


def store_reads(store: Store, execution_id: str, chunks: list[list[Any]]) -> None:
    """Chunks of reads, each read at its own millisecond (never going backwards)."""
    store.create(Job(command=("x",)), execution_id, 1.0)
    records, offsets, ms = [], [0, 0], 1_780_000_000_000
    for index, chunk in enumerate(chunks):
        stamps = []
        for _, _, step in chunk:
            ms += step
            stamps.append(ms)
        segments = [(s, d) for s, d, _ in chunk]
        records.append(
            Encoder("none").encode(
                execution_id, index, (offsets[0], offsets[1]), segments, 0.0, stamps=stamps
            )
        )
        for s, d in segments:
            offsets[s is Stream.STDERR] += len(d)
    store.write(
        WriteBatch(records, [OutputUpdate(execution_id, offsets[0], offsets[1], len(chunks), 2.0)])
    )
    store.finish(execution_id, Outcome(Status.SUCCEEDED, 0), 3.0, None)


@SETTINGS
@example(  # a stdout line continued in a chunk first read, on stderr, before the cut
    chunks=[
        [(Stream.STDOUT, b"a\nb", 0)],
        [(Stream.STDERR, b"e\n", 1), (Stream.STDOUT, b"c\nd", 1)],
        [(Stream.STDOUT, b"e", 1), (Stream.STDOUT, b"\n", 2)],
    ],
    which=Stream.STDOUT,
    nudge=0,
)
@example(  # a line begun before the cut, continued in two chunks read after it
    chunks=[[(Stream.STDOUT, b"a", 0)], [(Stream.STDOUT, b"b", 2)], [(Stream.STDOUT, b"c\n", 1)]],
    which=None,
    nudge=1,
)
@given(
    chunks=st.lists(reads, min_size=1, max_size=8),
    which=st.sampled_from([None, Stream.STDOUT, Stream.STDERR]),
    nudge=st.sampled_from([0, 1]),
)
def test_time_windows_skip_chunks_and_cut_exactly(
    store: Store, chunks: list[list[Any]], which: Stream | None, nudge: int
) -> None:
    """``since`` starts at the chunk where it begins, mid-line or not; ``until`` stops
    reading once nothing earlier can come; the lines are those of the whole output."""
    execution_id = f"w{next(IDS)}"
    store_reads(store, execution_id, chunks)
    every = [(ln.ms, ln.stream, ln.data, ln.ended) for ln in iter_lines(store, execution_id, which)]
    for ms in sorted({line[0] + nudge for line in every}):
        since = iter_lines(store, execution_id, which, since=ms / 1000)
        until = iter_lines(store, execution_id, which, until=ms / 1000)
        assert [(ln.ms, ln.stream, ln.data, ln.ended) for ln in since] == [
            line for line in every if line[0] >= ms
        ]
        assert [(ln.ms, ln.stream, ln.data, ln.ended) for ln in until] == [
            line for line in every if line[0] < ms
        ]
        grep = search(store, execution_id, re.compile(""), which, Window.of(None, ms / 1000))
        assert [(m.line, m.text.encode()) for m in grep] == [
            (n, line[2]) for n, line in enumerate(every, 1) if line[0] < ms
        ]


def test_a_follower_shows_the_end_only_after_the_last_output(store: Store) -> None:
    """The record a follower exposes says "finished" only once every byte was returned:
    the live page sends that record as the final ``status`` event, after the output."""
    pieces = [(b"line %d\n" % i, b"") for i in range(6)]
    execution_id = f"e{next(IDS)}"
    _, _, both = store_pieces(store, execution_id, pieces)
    follower = Follower(store, execution_id, batch=4)
    returned = b""
    while not follower.done:
        returned += b"".join(p for _, p in follower.read() if isinstance(p, bytes))
        shown = follower.execution  # None until a record that fits what was returned
        assert shown is None or shown.status.finished == (returned == both), returned
    assert returned == both
