"""Output limits, pure: which bytes are kept, trimmed, dropped, and where the gap is."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from outspool.buffer import FlushPolicy, OutputBuffer
from outspool.models import Stream
from outspool.window import Limit, Window, effective, plan

OUT, ERR = Stream.STDOUT, Stream.STDERR


def test_limit_keeps_halves() -> None:
    assert Limit.of(0) is None
    assert Limit.of(1 << 20) == Limit(512 << 10, 512 << 10)
    assert Limit.of(7) == Limit(3, 4)
    assert Limit.of(1) == Limit(0, 1)


def test_a_job_may_ask_for_less_never_more() -> None:
    assert effective(None, 100) == 100
    assert effective(10, 100) == 10
    assert effective(1000, 100) == 100
    assert effective(0, 100) == 100
    assert effective(50, 0) == 50
    assert effective(None, 0) == 0


def test_split_at_the_head() -> None:
    w = Window(Limit(4, 4))
    assert w.split(b"abc") == (b"abc", b"")
    assert w.split(b"defg") == (b"d", b"efg")
    assert w.split(b"hi") == (b"", b"hi")
    assert w.written == 9
    unlimited = Window(None)
    assert unlimited.split(b"x" * 100) == (b"x" * 100, b"")


def test_drop_tail_keeps_the_newest_pending_bytes_contiguous() -> None:
    buf = OutputBuffer(FlushPolicy())
    buf.append(OUT, b"head", 0.0)
    buf.append(OUT, b"0123", 0.0, tail=True)
    buf.append(ERR, b"err", 0.0)
    buf.append(OUT, b"4567", 0.0, tail=True)
    assert buf.drop_tail(OUT, keep=5) == 3
    assert buf.size == 4 + 5 + 3
    assert buf.take() == [(OUT, b"head"), (OUT, b"3"), (ERR, b"err"), (OUT, b"4567")]
    assert buf.size == 0


def test_a_read_cut_again_and_again_is_cut_once_when_taken() -> None:
    buf = OutputBuffer(FlushPolicy())
    buf.append(OUT, b"abcdefgh", 0.0, tail=True)
    assert buf.drop_tail(OUT, keep=6) == 2
    assert buf.drop_tail(OUT, keep=3) == 3
    buf.append(OUT, b"ij", 0.0, tail=True)
    assert buf.drop_tail(OUT, keep=4) == 1
    assert buf.size == 4
    assert buf.take() == [(OUT, b"gh"), (OUT, b"ij")]
    buf.append(OUT, b"kl", 0.0, tail=True)  # nothing of the last take's cuts stays behind
    assert buf.take() == [(OUT, b"kl")]


def test_tail_bytes_wait_for_the_tail_delay_not_the_size_trigger() -> None:
    policy = FlushPolicy(max_buffer_size=10, idle_flush_delay=0.005, tail_flush_delay=0.05)
    buf = OutputBuffer(policy)
    buf.append(OUT, b"x" * 1000, 1.0, tail=True)
    assert not buf.due(1.01)
    assert buf.due(1.05)
    buf.append(ERR, b"y" * 11, 1.0)
    assert buf.due(1.0)


def test_plan_keeps_tails_in_chunks_of_their_own() -> None:
    windows = {OUT: Window(Limit(2, 2)), ERR: Window(None)}
    segments = [(OUT, b"ab"), (ERR, b"E1"), (OUT, b"cd"), (ERR, b"E2"), (OUT, b"ef")]
    windows[OUT].pending_dropped = 5
    planned, end = plan(segments, (0, 0), windows, max_chunk=100)
    assert [(p.offsets, p.segments, p.tail) for p in planned] == [
        ((0, 0), [(OUT, b"ab"), (ERR, b"E1")], None),
        ((7, 2), [(OUT, b"cd")], OUT),
        ((9, 2), [(ERR, b"E2")], None),
        ((9, 4), [(OUT, b"ef")], OUT),
    ]
    assert end == (11, 4)
    assert windows[OUT].pending_dropped == 0


def test_slide_and_cut() -> None:
    w = Window(Limit(10, 10))
    w.stored(1, 10, 20)
    w.stored(2, 20, 30)
    w.stored(3, 30, 35)
    assert w.dropped == 0
    assert w.slide(35) == [1]
    assert w.dropped == 10
    assert w.cut(35) == (2, 20, 5)
    w.recut(25)
    assert w.dropped == 15
    assert w.cut(35) is None


@dataclass
class Model:
    """The writer's bookkeeping, with a dict for a store: what window.py asks of it."""

    limit: Limit
    max_chunk: int
    windows: dict[Stream, Window] = field(default_factory=dict)
    buffer: OutputBuffer = field(default_factory=lambda: OutputBuffer(FlushPolicy()))
    offsets: tuple[int, int] = (0, 0)
    store: dict[int, tuple[tuple[int, int], list[tuple[Stream, bytes]]]] = field(
        default_factory=dict
    )
    most: int = 0
    next_index: int = 0

    def __post_init__(self) -> None:
        self.windows = {OUT: Window(self.limit), ERR: Window(self.limit)}

    def write(self, stream: Stream, data: bytes) -> None:
        window = self.windows[stream]
        head, tail = window.split(data)
        self.buffer.append(stream, head, 0.0)
        self.buffer.append(stream, tail, 0.0, tail=True)
        window.pending_dropped += self.buffer.drop_tail(stream, self.limit.tail)

    def commit(self) -> None:
        planned, self.offsets = plan(self.buffer.take(), self.offsets, self.windows, self.max_chunk)
        for p in planned:
            index, self.next_index = self.next_index, self.next_index + 1
            self.store[index] = (p.offsets, p.segments)
            if p.tail is not None:
                start = p.offsets[p.tail - 1]
                size = sum(len(d) for _, d in p.segments)
                self.windows[p.tail].stored(index, start, start + size)
        for stream, window in self.windows.items():
            for index in window.slide(self.offsets[stream - 1]):
                del self.store[index]
        self.most = max(self.most, sum(len(d) for _, segs in self.store.values() for _, d in segs))

    def finish(self) -> None:
        self.commit()
        for stream, window in self.windows.items():
            found = window.cut(self.offsets[stream - 1])
            if found is not None:
                index, start, n = found
                (out, err), segs = self.store[index]
                assert segs and all(s is stream for s, _ in segs)
                data = b"".join(d for _, d in segs)[n:]
                shifted = (out + n, err) if stream is OUT else (out, err + n)
                self.store[index] = (shifted, [(stream, data)])
                window.recut(start + n)

    def stored(self, stream: Stream) -> list[tuple[int, bytes]]:
        """(offset, bytes) runs of one stream, merged where contiguous."""
        runs: list[tuple[int, bytes]] = []
        for index in sorted(self.store):
            offsets, segs = self.store[index]
            pos = offsets[stream - 1]
            data = b"".join(d for s, d in segs if s is stream)
            if not data:
                continue
            if runs and runs[-1][0] + len(runs[-1][1]) == pos:
                runs[-1] = (runs[-1][0], runs[-1][1] + data)
            else:
                assert not runs or runs[-1][0] + len(runs[-1][1]) < pos
                runs.append((pos, data))
        return runs


writes = st.lists(
    st.tuples(st.sampled_from([OUT, ERR]), st.binary(min_size=1, max_size=40), st.booleans()),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(writes=writes, limit=st.integers(1, 90), max_chunk=st.integers(1, 50))
def test_exactly_head_and_tail_are_kept(
    writes: list[tuple[Stream, bytes, bool]], limit: int, max_chunk: int
) -> None:
    lim = Limit.of(limit)
    assert lim is not None
    model = Model(lim, max_chunk)
    written = {OUT: b"", ERR: b""}
    for stream, data, commit in writes:
        model.write(stream, data)
        written[stream] += data
        if commit:
            model.commit()
        pending_tail = model.buffer.size - model.buffer.head_size
        assert pending_tail <= 2 * lim.tail
    model.finish()
    for stream, everything in written.items():
        size = len(everything)
        window = model.windows[stream]
        if size <= limit:
            expected = [(0, everything)] if everything else []
            assert window.dropped == 0
        else:
            head, tail = everything[: lim.head], everything[size - lim.tail :]
            expected = [(0, head), (size - lim.tail, tail)] if head else [(size - lim.tail, tail)]
            assert window.dropped == size - limit
        assert model.stored(stream) == expected
        assert model.offsets[stream - 1] == size
    # the store never holds more than both windows plus what one commit brought
    assert model.most <= 2 * limit + 2 * (lim.tail + 40 + max_chunk)
