"""Bytes in = bytes out: real child processes write random bytes, the store returns them."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outspool import Outspool, Settings, Status, Stream
from outspool.codec import decode
from tests.helpers import REPLAY, encode_writes

OUT, ERR = Stream.STDOUT, Stream.STDERR

SPECIAL = [
    b"\x00",
    b"\r",
    b"\r\n",
    b"\n",
    b"\xff\xfe\xfd",  # never valid UTF-8
    b"\xc3",  # a lone lead byte
    "é€😀".encode(),  # 2-, 3- and 4-byte characters, split by the cuts below
    b"\x1b[2K\r 50%|#####     | 5/10",
]
fragment = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=40).map(str.encode),
    st.sampled_from(SPECIAL),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=9), st.integers(100, 20_000)),
)
stream_bytes = st.lists(fragment, max_size=10).map(b"".join)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (clamped, sorted): the child's separate writes."""
    edges = sorted({0, len(data), *(min(p, len(data)) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def scripts(draw: st.DrawFn, fds: tuple[int, ...]) -> list[tuple[int, bytes, bool]]:
    """Writes to ``fds`` in a random order, each stream cut at random points."""
    per_fd = {}
    for fd in fds:
        data = draw(stream_bytes)
        per_fd[fd] = cut(data, draw(st.lists(st.integers(0, len(data)), max_size=8)))
    order = draw(st.permutations([fd for fd in fds for _ in per_fd[fd]]))
    pauses = draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    cursors = dict.fromkeys(fds, 0)
    writes = []
    for fd, pause in zip(order, pauses, strict=True):
        writes.append((fd, per_fd[fd][cursors[fd]], pause))
        cursors[fd] += 1
    return writes


def small_pieces() -> Settings:
    """Small reads and chunks, so a few KiB cross many read, chunk and flush boundaries."""
    return Settings.load(
        read_size=4096, max_chunk_size=4096, max_buffer_size=1024, max_pending_bytes=64 * 1024
    )


def capture_script(spool: Outspool, tmp_path: Path, writes: list[tuple[int, bytes, bool]]) -> str:
    script = tmp_path / "writes.bin"
    script.write_bytes(encode_writes(writes))
    ex = spool.run([sys.executable, "-c", REPLAY, str(script)])
    assert ex.status is Status.SUCCEEDED, ex.reason
    return ex.id


@pytest.mark.parametrize("fds", [(1,), (2,), (1, 2)], ids=["stdout", "stderr", "all"])
def test_byte_exact_round_trip(fds: tuple[int, ...], tmp_path: Path) -> None:
    with Outspool(str(tmp_path / "prop.db"), small_pieces()) as spool:

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(writes=scripts(fds), window=st.tuples(st.integers(0, 60_000), st.integers(1, 9000)))
        def check(writes: list[tuple[int, bytes, bool]], window: tuple[int, int]) -> None:
            out = b"".join(d for fd, d, _ in writes if fd == 1)
            err = b"".join(d for fd, d, _ in writes if fd == 2)
            ex_id = capture_script(spool, tmp_path, writes)
            ex = spool.get(ex_id)
            assert spool.read(ex_id, OUT) == out
            assert spool.read(ex_id, ERR) == err
            assert (ex.stdout_size, ex.stderr_size) == (len(out), len(err))
            both = spool.read(ex_id, None)
            # `all` holds every byte once, each stream in its own order
            tagged = [
                piece
                for record in spool.store.chunks_after(ex_id, -1, 1 << 20)
                for piece in decode(record).tagged()
            ]
            assert b"".join(p for _, p in tagged) == both
            assert b"".join(p for s, p in tagged if s is OUT) == out
            assert b"".join(p for s, p in tagged if s is ERR) == err
            assert b"".join(p for _, p in spool.follow(ex_id) if isinstance(p, bytes)) == both
            # a range read from any offset
            offset, limit = window
            for stream, whole in ((OUT, out), (ERR, err), (None, both)):
                got = spool.output(ex_id, stream, offset, limit)
                assert got.data == whole[offset : offset + limit]
                assert got.next_offset == offset + len(got.data)

        check()


def test_all_interleaves_in_arrival_order(tmp_path: Path) -> None:
    """Each write waits until the previous one is stored, so arrival order is known."""
    db = tmp_path / "order.db"
    child = f"""
import os, sqlite3, sys, time
db = sqlite3.connect({str(db)!r})
total = 0
for i in range(12):
    piece = b"out%d\\n" % i if i % 3 else b"\\xffERR%d\\r" % i
    os.write(1 if i % 3 else 2, piece)
    total += len(piece)
    deadline = time.monotonic() + 30
    while db.execute("SELECT sum(stdout_size + stderr_size) FROM executions").fetchone()[0] < total:
        assert time.monotonic() < deadline, "output never stored"
        time.sleep(0.002)
"""
    expected = b"".join(b"out%d\n" % i if i % 3 else b"\xffERR%d\r" % i for i in range(12))
    with Outspool(str(db), Settings.load()) as spool:
        ex = spool.run([sys.executable, "-c", child])
        assert ex.status is Status.SUCCEEDED, spool.read(ex.id, ERR)
        assert spool.read(ex.id) == expected
        assert ex.chunk_count >= 12  # one commit per piece: the order was really enforced


@pytest.mark.slow
def test_a_line_of_tens_of_megabytes(spool: Outspool) -> None:
    size = 40 << 20
    child = (
        "import os, sys\n"
        f"block = bytes(range(256)).replace(b'\\n', b'') * 4096\n"
        f"left = {size}\n"
        "while left:\n"
        "    piece = block[: min(left, len(block))]\n"
        "    sys.stdout.buffer.write(piece)\n"
        "    left -= len(piece)\n"
    )
    ex = spool.run([sys.executable, "-c", child])
    assert ex.status is Status.SUCCEEDED
    assert ex.stdout_size == size
    block = bytes(range(256)).replace(b"\n", b"") * 4096
    expected = hashlib.sha256()
    left = size
    while left:
        piece = block[: min(left, len(block))]
        expected.update(piece)
        left -= len(piece)
    got = hashlib.sha256()
    for piece in spool.iter_output(ex.id, OUT):
        assert b"\n" not in piece
        got.update(piece)
    assert got.hexdigest() == expected.hexdigest()
    assert spool.tail(ex.id, 1, OUT).data[-10:] == expected_tail(block, size)


def expected_tail(block: bytes, size: int) -> bytes:
    end = size % len(block) or len(block)
    return block[:end][-10:]


def test_inline_copy_matches_chunks(db_path: Path) -> None:
    with Outspool(str(db_path), Settings.load(max_inline_output=1000)) as spool:
        small = spool.run(
            [sys.executable, "-c", "import os; os.write(1, b'\\x00o\\xff'); os.write(2, b'e')"]
        )
        large = spool.run([sys.executable, "-c", "import os; os.write(2, b'x' * 1001)"])
    conn = sqlite3.connect(db_path)
    try:
        rows = {
            r[0]: r[1:]
            for r in conn.execute("SELECT id, stdout, stderr, output_truncated FROM executions")
        }
    finally:
        conn.close()
    assert rows[small.id] == (b"\x00o\xff", b"e", 0)
    assert small.output_truncated is False
    assert rows[large.id] == (None, None, 1)
    assert large.output_truncated is True
    assert large.stderr_size == 1001
