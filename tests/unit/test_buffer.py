"""The flush policy: time, size and line triggers, with the clock injected."""

from __future__ import annotations

from outspool.buffer import FlushPolicy, OutputBuffer
from outspool.models import Stream

OUT, ERR = Stream.STDOUT, Stream.STDERR
POLICY = FlushPolicy(
    flush_interval=1.0, max_buffer_size=100, max_buffer_lines=3, idle_flush_delay=0.01
)


def test_empty_buffer_is_never_due() -> None:
    buf = OutputBuffer(POLICY)
    assert buf.deadline() is None
    assert not buf.due(now=1e9)
    assert not buf.due(now=1e9, writer_idle=False)


def test_empty_append_is_ignored() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"", now=5.0)
    assert buf.size == 0
    assert buf.first_pending_at is None
    assert buf.take() == []


def test_time_trigger_when_writer_busy_is_flush_interval() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"a", now=10.0)
    assert buf.deadline(writer_idle=False) == 11.0
    assert not buf.due(now=10.999, writer_idle=False)
    assert buf.due(now=11.0, writer_idle=False)


def test_time_trigger_when_writer_idle_is_the_short_delay() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"a", now=10.0)
    assert buf.deadline(writer_idle=True) == 10.01
    assert not buf.due(now=10.005)
    assert buf.due(now=10.01)


def test_deadline_counts_from_oldest_pending_byte() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"a", now=10.0)
    buf.append(ERR, b"b", now=10.9)
    assert buf.deadline(writer_idle=False) == 11.0


def test_size_trigger_is_more_than_max_buffer_size() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"x" * 100, now=0.0)
    assert not buf.due(now=0.0, writer_idle=False)
    buf.append(ERR, b"y", now=0.0)
    assert buf.size == 101
    assert buf.due(now=0.0, writer_idle=False)


def test_line_trigger_is_more_than_max_buffer_lines() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"1\n2\n", now=0.0)
    buf.append(ERR, b"3\n", now=0.0)
    assert buf.lines == 3
    assert not buf.due(now=0.0, writer_idle=False)
    buf.append(OUT, b"4\n", now=0.0)
    assert buf.due(now=0.0, writer_idle=False)


def test_a_read_past_the_size_trigger_is_not_counted_for_lines() -> None:
    # bulk reads are due by size alone: counting their newlines would be wasted work
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"\n" * 101, now=0.0)
    assert buf.lines == 0
    assert buf.due(now=0.0, writer_idle=False)
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"\n" * 2 + b"x" * 98, now=0.0)  # exactly at the size: still counted
    assert buf.lines == 2


def test_carriage_returns_are_not_lines() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"\r10%\r20%\r30%\r40%\r", now=0.0)
    assert buf.lines == 0
    assert not buf.due(now=0.0, writer_idle=False)


def test_take_hands_over_reads_in_arrival_order_and_resets() -> None:
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"one\n", now=1.0)
    buf.append(ERR, b"two", now=2.0)
    buf.append(OUT, b"three", now=3.0)
    assert buf.take() == [(OUT, b"one\n"), (ERR, b"two"), (OUT, b"three")]
    assert (buf.size, buf.lines, buf.first_pending_at) == (0, 0, None)
    assert not buf.due(now=100.0)


def test_output_arriving_during_a_flush_is_kept_for_the_next() -> None:
    """The sketch cleared its buffer after the write; take() must not lose later data."""
    buf = OutputBuffer(POLICY)
    buf.append(OUT, b"before", now=1.0)
    in_flight = buf.take()
    buf.append(ERR, b"during", now=1.5)  # arrives while the first batch is being written
    buf.append(OUT, b"\n", now=1.6)
    assert in_flight == [(OUT, b"before")]
    assert buf.size == len(b"during\n")
    assert buf.lines == 1
    assert buf.first_pending_at == 1.5
    assert buf.take() == [(ERR, b"during"), (OUT, b"\n")]
