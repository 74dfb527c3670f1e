"""Execution IDs sort by time; planning chunks never cuts a read."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from outspool.jobs import new_id
from outspool.models import Stream
from outspool.window import Window, plan

ID = re.compile(r"^[0-9a-hjkmnp-tv-z]{16}$")


def test_new_id_shape_and_uniqueness() -> None:
    ids = [new_id() for _ in range(2000)]
    assert all(ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


# Two times 1 ms apart can floor to the same millisecond in floating point; 2 ms cannot.
@given(st.floats(1e9, 4e9), st.floats(0.002, 1e8))
def test_new_id_sorts_by_creation_time(t: float, later: float) -> None:
    assert new_id(t) < new_id(t + later)


@given(
    segments=st.lists(
        st.tuples(st.sampled_from(list(Stream)), st.binary(min_size=1, max_size=50)), max_size=40
    ),
    limit=st.integers(1, 120),
)
def test_plan_keeps_reads_whole_and_in_order(
    segments: list[tuple[Stream, bytes]], limit: int
) -> None:
    windows = {Stream.STDOUT: Window(None), Stream.STDERR: Window(None)}
    pieces = [p.segments for p in plan(segments, (0, 0), windows, limit)[0]]
    assert [seg for piece in pieces for seg in piece] == segments  # same objects, same order
    assert all(piece for piece in pieces)
    for piece in pieces:
        size = sum(len(d) for _, d in piece)
        assert size - len(piece[-1][1]) < limit  # closes once it reaches limit: <= limit + 1 read
    for piece in pieces[:-1]:
        assert sum(len(d) for _, d in piece) >= limit
