"""Output limits on both backends: a runaway program keeps its head and its tail, exactly.

A real child writes a stream whose every byte is known from its offset (block
``k`` of 1 MiB is ``Random(k).randbytes``), so any piece read back can be
checked where it claims to be.
"""

from __future__ import annotations

import random
import sys
import threading
from functools import cache
from pathlib import Path

import pytest
from bench.bounded import disk_usage

from outspool import Outspool, Settings, Status, Stream
from outspool.follow import Follower, Gap
from outspool.store import Store

OUT, ERR = Stream.STDOUT, Stream.STDERR
MiB = 1 << 20
KiB = 1 << 10

PRODUCER = """
import os, random, sys
blocks, fd = int(sys.argv[1]), int(sys.argv[2])
for k in range(blocks):
    data = memoryview(random.Random(k).randbytes(1 << 20))
    for i in range(0, len(data), 100_003):
        piece = data[i:i + 100_003]
        while piece:
            piece = piece[os.write(fd, piece):]
if fd == 1:
    os.write(2, b"done\\n")
"""


@cache
def block(k: int) -> bytes:
    return random.Random(k).randbytes(MiB)


def expected(offset: int, size: int) -> bytes:
    out = bytearray()
    while size > 0:
        k, at = divmod(offset, MiB)
        piece = block(k)[at : at + size]
        out += piece
        offset += len(piece)
        size -= len(piece)
    return bytes(out)


def kept_bytes(store: Store, execution_id: str) -> int:
    """Output bytes held in the execution's chunk rows right now."""
    total = 0
    after = -1
    while records := store.chunks_after(execution_id, after, 64):
        after = records[-1].chunk_index
        total += sum(r.stdout_size + r.stderr_size for r in records)
    return total


@pytest.mark.slow
def test_200_mib_with_a_1_mib_limit_keeps_exactly_head_and_tail(spool: Outspool, url: str) -> None:
    size = 200 * MiB
    most = {"kept": 0, "disk": 0}
    running = spool.start(
        [sys.executable, "-c", PRODUCER, "200", "1"], max_output=MiB, name="flood"
    )
    while not running.join(0.05):
        most["kept"] = max(most["kept"], kept_bytes(spool.store, running.id))
        if "://" not in url:
            most["disk"] = max(most["disk"], disk_usage(Path(url)))
    ex = running.wait()
    assert ex.status is Status.SUCCEEDED
    assert (ex.stdout_size, ex.stdout_dropped) == (size, size - MiB)
    assert (ex.stderr_size, ex.stderr_dropped) == (5, 0)
    assert ex.output_truncated
    head, tail = expected(0, 512 * KiB), expected(size - 512 * KiB, 512 * KiB)
    assert spool.read(ex.id, OUT) == head + tail
    assert kept_bytes(spool.store, ex.id) == MiB + 5
    # while it ran, the store never held much more than the limit
    assert most["kept"] <= 3 * MiB
    assert most["disk"] <= 16 * MiB
    # ranges keep the program's offsets and say where the gap is
    before = spool.output(ex.id, OUT, 512 * KiB - 10, 100)
    assert (before.data, before.next_offset, before.dropped) == (head[-10:], 512 * KiB, 0)
    inside = spool.output(ex.id, OUT, 100 * MiB, 10)
    assert inside.dropped == size - 512 * KiB - 100 * MiB
    assert inside.data == tail[:10]
    assert inside.next_offset == size - 512 * KiB + 10
    last = spool.tail(ex.id, 1, OUT)
    assert last.next_offset == size


def test_a_small_limit_keeps_both_streams(spool: Outspool) -> None:
    code = (
        "import sys\n"
        "for i in range(2000):\n"
        "    print(f'out {i:05d}', flush=True)\n"
        "    if i % 100 == 0: print(f'err {i:05d}', file=sys.stderr, flush=True)\n"
    )
    ex = spool.run([sys.executable, "-c", code], max_output=4000)
    out = b"".join(f"out {i:05d}\n".encode() for i in range(2000))
    err = b"".join(f"err {i:05d}\n".encode() for i in range(0, 2000, 100))
    assert ex.stdout_size == len(out)
    assert ex.stdout_dropped == len(out) - 4000
    assert ex.stderr_dropped == 0
    assert spool.read(ex.id, OUT) == out[:2000] + out[-2000:]
    assert spool.read(ex.id, ERR) == err
    pieces = list(spool.iter_pieces(ex.id))
    gaps = [p for p in pieces if isinstance(p, Gap)]
    assert gaps == [Gap(OUT, 2000, len(out) - 4000)]
    merged = b"".join(p for p in pieces if isinstance(p, bytes))
    assert merged.startswith(b"out 00000\n")
    assert len(merged) == 4000 + len(err)  # the order across two pipes is as read


def test_a_job_may_lower_the_limit_but_not_raise_it(url: str) -> None:
    settings = Settings.load(max_output=1000)
    with Outspool(url, settings) as spool:
        ex = spool.run([sys.executable, "-c", "print('x' * 5000)"], max_output=10_000)
        assert (ex.stdout_size, ex.stdout_dropped) == (5001, 4001)
        ex = spool.run([sys.executable, "-c", "print('x' * 5000)"], max_output=100)
        assert ex.stdout_dropped == 4901
        assert spool.read(ex.id, OUT) == b"x" * 99 + b"\n"


@pytest.mark.slow
def test_a_follower_gets_the_head_a_gap_notice_and_the_tail(spool: Outspool) -> None:
    size = 64 * MiB
    running = spool.start([sys.executable, "-c", PRODUCER, "64", "1"], max_output=MiB)
    got: list[tuple[int, bytes | Gap]] = []

    def follow() -> None:
        follower = Follower(spool.store, running.id, OUT)
        while not follower.done:
            start = follower.offset
            for _, piece in follower.poll(0.5):
                got.append((start, piece))
                start += piece.size if isinstance(piece, Gap) else len(piece)

    thread = threading.Thread(target=follow)
    thread.start()
    running.wait()
    thread.join(60)
    assert not thread.is_alive()
    assert any(isinstance(p, Gap) for _, p in got)
    position = 0
    for start, piece in got:
        assert start == position
        if isinstance(piece, Gap):
            assert piece.offset == start
            position += piece.size
        else:
            assert piece == expected(start, len(piece))
            position += len(piece)
    assert position == size
    first = got[0]
    assert first[0] == 0 and not isinstance(first[1], Gap)
    last_gap = max(s + p.size for s, p in got if isinstance(p, Gap))
    assert last_gap <= size - 512 * KiB  # the whole tail came after the last gap


def test_progress_under_a_limit_is_that_of_the_latest_output(spool: Outspool) -> None:
    """Reads past the head are scanned for progress only now and then (their bytes are
    mostly dropped); the last one is scanned all the same, so the end's progress is stored."""
    code = (
        "import os\n"
        "for i in range(2000):\n"
        "    os.write(1, b'x' * 3000 + b' step %d of 2000: %d%%\\n' % (i, i * 100 // 2000))\n"
        "os.write(1, b'all done: 100%\\n')\n"
    )
    ex = spool.run([sys.executable, "-c", code], max_output=64 * KiB)
    assert ex.stdout_dropped > 5 * MiB
    assert (ex.progress, ex.progress_percent) == ("all done: 100%", 100.0)
    assert spool.read(ex.id, OUT).endswith(b" step 1999 of 2000: 99%\nall done: 100%\n")


def followed(follower: Follower) -> list[tuple[int, bytes | Gap]]:
    """Everything ``follower`` hands out until the end, with where each piece starts."""
    got: list[tuple[int, bytes | Gap]] = []
    while not follower.done:
        start = follower.offset
        for _, piece in follower.poll(0.5):
            got.append((start, piece))
            start += piece.size if isinstance(piece, Gap) else len(piece)
    return got


@pytest.mark.slow
def test_a_follower_of_a_flood_gets_one_gap_notice(spool: Outspool) -> None:
    """Every commit's tail window starts past the one before: handed out as found, a flood
    made a gap notice every few commits. Held back (here until the end), it makes one."""
    size = 64 * MiB
    running = spool.start([sys.executable, "-c", PRODUCER, "64", "1"], max_output=MiB)
    follower = Follower(spool.store, running.id, OUT, hold=3600)
    got = followed(follower)
    running.wait()
    gaps = [(start, piece) for start, piece in got if isinstance(piece, Gap)]
    assert len(gaps) == 1, [(s, p.size) for s, p in gaps]
    (start, gap), position = gaps[0], 0
    assert MiB // 2 <= start and start + gap.size <= size - MiB // 2
    for start, piece in got:
        assert start == position
        position += piece.size if isinstance(piece, Gap) else len(piece)
        if not isinstance(piece, Gap):
            assert piece == expected(start, len(piece))
    assert position == size


def test_what_a_follower_held_comes_out_once_the_gaps_stop(spool: Outspool, tmp_path: Path) -> None:
    """After a flood, a program that prints a line and waits shows it while it waits."""
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "for _ in range(40): os.write(1, b'x' * 99_999 + b'\\n')\n"
        "os.write(1, b'flood over\\n')\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    )
    running = spool.start([sys.executable, "-c", code], max_output=MiB)
    follower = Follower(spool.store, running.id, OUT, hold=0.2)
    seen = b""
    gaps = 0
    while not seen.endswith(b"flood over\n"):
        for _, piece in follower.poll(0.5):
            if isinstance(piece, Gap):
                gaps += 1
            else:
                seen += piece
        assert not follower.done
    assert gaps >= 1
    go.touch()
    running.wait()
