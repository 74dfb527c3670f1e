"""Producers: small, fast, deterministic programs whose output the contenders capture.

Run as ``python bench/produce.py KIND COUNT``; the harness imports :func:`chunks` to know
the exact bytes each producer writes (stdout, stderr and their merged order) without
storing them.

Kinds:
  bulk N     N bytes on stdout in 64 KiB writes (16 distinct pre-built blocks of text)
  lines N [DELAY]  N log lines of ~60 bytes on stdout, one write (flush) each
  mixed N    N numbered lines, every third on stderr, one write each
  stderr N   N bytes of log lines on stderr in ~4 KiB writes
  trickle N [INTERVAL [DELAY]]  N lines on stdout, one every INTERVAL (10 ms), each carrying
             its send time, after DELAY seconds
"""

from __future__ import annotations

import base64
import os
import random
import sys
import time
from collections.abc import Iterator

BLOCK = 64 * 1024
STDOUT, STDERR = 1, 2


def _bulk_blocks() -> list[bytes]:
    rng = random.Random(1234)
    blocks = []
    for _ in range(16):
        raw = base64.b64encode(rng.randbytes(BLOCK))[: BLOCK - BLOCK // 64]
        lines = [raw[i : i + 63] for i in range(0, len(raw), 63)]
        block = b"\n".join(lines)
        blocks.append((block + b"\n" * BLOCK)[:BLOCK])
    return blocks


def log_line(i: int) -> bytes:
    return b"%08d 2025-11-26T12:00:00.123Z INFO worker-%d request ok\n" % (i, i % 7)


def mixed_line(i: int) -> tuple[int, bytes]:
    if i % 3 == 0:
        return STDERR, b"E %08d warning: something odd happened\n" % i
    return STDOUT, b"O %08d progress step %d of the job\n" % (i, i % 100)


def chunks(kind: str, count: int) -> Iterator[tuple[int, bytes]]:
    """Yield (fd, data) for every write the producer makes, in order (trickle excluded)."""
    if kind == "bulk":
        blocks = _bulk_blocks()
        full, rest = divmod(count, BLOCK)
        for n in range(full):
            yield STDOUT, blocks[n % 16]
        if rest:
            yield STDOUT, blocks[full % 16][:rest]
    elif kind == "lines":
        for i in range(count):
            yield STDOUT, log_line(i)
    elif kind == "mixed":
        for i in range(count):
            yield mixed_line(i)
    elif kind == "stderr":
        buf = bytearray()
        i = 0
        while len(buf) < count:
            buf += b"".join(log_line(j) for j in range(i, i + 64))
            i += 64
        data = bytes(buf[:count])
        for off in range(0, count, 4096):
            yield STDERR, data[off : off + 4096]
    else:
        raise ValueError(f"unknown producer kind {kind!r}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _trickle(count: int, interval: float, delay: float) -> None:
    time.sleep(delay)
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _write_all(STDOUT, b"%06d %.6f trickle\n" % (i, time.time()))


def main(argv: list[str]) -> int:
    kind, count = argv[0], int(argv[1])
    if kind == "trickle":
        interval = float(argv[2]) if len(argv) > 2 else 0.010
        _trickle(count, interval, float(argv[3]) if len(argv) > 3 else 0.0)
        return 0
    if kind == "lines":  # the hot loop, inlined: one write per line as a flushed logger would
        time.sleep(float(argv[2]) if len(argv) > 2 else 0.0)
        write = os.write
        for i in range(count):
            write(STDOUT, b"%08d 2025-11-26T12:00:00.123Z INFO worker-%d request ok\n" % (i, i % 7))
        return 0
    for fd, data in chunks(kind, count):
        _write_all(fd, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
