"""Finding output: what per-line times cost, and how fast ``grep`` scans (issue 11).

``linetimes``: the same program captured in this process with the library, rounds
alternating between the shipped writer and one whose encoder drops the read times
(the baseline: no ``line_times`` blob, chunk time = commit time); both still note the
clock per read, which is one ``time.time()`` per read of up to ``read_size``. Reported:
wall time and CPU of the capture, stored bytes per output byte, and the bytes the
``line_times`` blobs take. Whole captures swing by tens of percent on a busy machine, so
each run also gives two exact shares: the CPU of all that line times add (a clock reading
per read, clamped and kept, then grouping and encoding), replayed on that run's real reads,
over the capture's CPU; and the ``line_times`` blobs over the stored bytes. The goal: at
most 5 % of bulk throughput and of stored bytes.

``since``: ``logs --since``/``--until`` near either end of one stored execution of log
lines, against reading every line and filtering (what it did before it skipped chunks).

``grep``: one stored execution of log lines, scanned by ``outspool.search`` with a
literal that never matches, a case-insensitive regular expression whose fixed text is
absent, one that matches two lines in seven, one with no fixed text at all (the regex
engine alone) and one that every line matches, against decoding the same chunks without
matching (the floor), all in this process; MB/s per
core is output bytes over CPU seconds of this process. The goal: >= 100 MB/s per core.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from bench.common import MIB, Row, fresh_dir, producer
from outspool import Outspool, Settings
from outspool.buffer import OutputBuffer
from outspool.codec import ChunkRecord, Encoder
from outspool.follow import iter_chunks, iter_output
from outspool.lines import between, iter_lines
from outspool.linetimes import encode as encode_times
from outspool.linetimes import group as group_times
from outspool.models import Stream
from outspool.search import Window, compile_pattern, search

SHIPPED = "outspool (line times, as shipped)"
BASELINE = "outspool without line times (baseline)"


@contextmanager
def _without_line_times() -> Iterator[None]:
    """The writer's encoder, with the read times dropped (only in this process, only here)."""
    shipped = Encoder.encode

    def encode(self: Encoder, *args: Any, **kwargs: Any) -> ChunkRecord:
        kwargs.pop("stamps", None)
        return shipped(self, *args, **kwargs)

    Encoder.encode = encode  # type: ignore[method-assign]
    try:
        yield
    finally:
        Encoder.encode = shipped  # type: ignore[method-assign]


@contextmanager
def _reads_seen(lengths: list[int]) -> Iterator[None]:
    """Notes the length of every read the writer is given (only in this process, only here)."""
    shipped = OutputBuffer.append

    def append(self: OutputBuffer, stream: Stream, data: bytes, *args: Any, **kwargs: Any) -> None:
        lengths.append(len(data))
        shipped(self, stream, data, *args, **kwargs)

    OutputBuffer.append = append  # type: ignore[method-assign]
    try:
        yield
    finally:
        OutputBuffer.append = shipped  # type: ignore[method-assign]


def _capture(kind: str, count: int, tag: str) -> dict[str, float]:
    folder = fresh_dir(f"find-{tag}")
    lengths: list[int] = []
    with Outspool(str(folder / "t.db"), Settings.load()) as spool, _reads_seen(lengths):
        cpu, began = time.process_time(), time.monotonic()
        ex = spool.run(producer(kind, count))
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
        total = ex.stdout_size + ex.stderr_size
        blobs = sum(len(r.line_times or b"") for r in iter_chunks(spool.store, ex.id))
        stored = spool.store.stats().stored_bytes
    work = _line_time_work(lengths)
    return {
        "wall": wall,
        "cpu": cpu,
        "bytes": total,
        "stored": stored,
        "times": blobs,
        "reads": len(lengths),
        "work": work,
    }


def _line_time_work(lengths: list[int]) -> float:
    """CPU seconds of all that line times add to a capture, replayed on its real reads: a
    clock reading per read (clamped, kept), then grouping and encoding them, as the writer
    does; the best of three."""
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        stamps: list[int] = []
        last = 0
        for _length in lengths:
            last = max(last, int(time.time() * 1000))
            stamps.append(last)
        encode_times(group_times(lengths, stamps) or [(1, last)])
        best = min(best, time.process_time() - began)
    return best


def alternating(
    kind: str,
    count: int,
    runs: int,
    names: tuple[str, str],
    baseline: Callable[[], AbstractContextManager[None]],
) -> list[Row]:
    """Captures of the producer in rounds alternating between the shipped library (the
    first name) and the same within ``baseline()`` (the second); medians of each figure."""
    seen: dict[str, list[dict[str, float]]] = {names[0]: [], names[1]: []}
    for _ in range(runs):
        with baseline():
            seen[names[1]].append(_capture(kind, count, "base"))
        seen[names[0]].append(_capture(kind, count, "shipped"))
    return [_capture_row(name, outcomes) for name, outcomes in seen.items()]


def linetimes(kind: str, count: int, runs: int) -> list[Row]:
    """Alternating rounds with and without line times; medians of each figure."""
    rows = alternating(kind, count, runs, (SHIPPED, BASELINE), _without_line_times)
    base, ours = rows[1], rows[0]
    if base.wall_s and ours.wall_s and base.disk_per_byte and ours.disk_per_byte:
        work, blobs = ours.extra["work_share"], ours.extra["blob_share"]
        reads, per_read = ours.extra["reads"], ours.extra["per_read"]
        ours.note = (
            f"in each run: line-time work {100 * work:.2f} % of the capture's CPU "
            f"({reads:,.0f} reads replayed, {1e6 * per_read:.2f} µs each), line_times "
            f"blobs {100 * blobs:.3f} % of the stored bytes "
            f"({ours.extra['times_bytes']:,.0f} B); whole runs vs the baseline "
            f"(noisy on a busy machine): time {100 * (ours.wall_s / base.wall_s - 1):+.1f} %, "
            f"stored bytes {100 * (ours.disk_per_byte / base.disk_per_byte - 1):+.2f} %"
        )
    return rows


def encode_cost(kind: str, count: int, rounds: int) -> list[Row]:
    """CPU of the writer's per-read and per-chunk work with and without line times, on the
    producer's exact writes grouped into 1 MiB chunks: one clock read per read plus
    encoding the chunk (zstd as shipped). Less noisy than whole captures on a busy machine."""
    from bench.produce import chunks as writes

    segments = [(Stream(fd), data) for fd, data in writes(kind, count)]
    pieces = [segments[i : i + 16] for i in range(0, len(segments), 16)]
    encoder = Encoder()
    cpu: dict[str, list[float]] = {SHIPPED: [], BASELINE: []}
    for _ in range(rounds):
        for name, stamped in ((BASELINE, False), (SHIPPED, True)):
            began = time.process_time()
            for index, piece in enumerate(pieces):
                stamps = [int(time.time() * 1000) for _ in piece] if stamped else None
                encoder.encode("x", index, (0, 0), piece, 0.0, stamps=stamps)
            cpu[name].append(time.process_time() - began)
    rows = cpu_rows(cpu, sum(len(d) for _, d in segments), rounds)
    if rows[1].cpu_s:
        rows[
            0
        ].note = f"CPU {100 * ((rows[0].cpu_s or 0) / rows[1].cpu_s - 1):+.1f} % vs the baseline"
    return rows


def cpu_rows(cpu: dict[str, list[float]], total: int, rounds: int) -> list[Row]:
    """One row per contender: the median CPU seconds of its rounds over ``total`` bytes."""
    return [
        Row(
            contender=name,
            runs=rounds,
            cpu_s=statistics.median(v),
            mb_s=total / 1e6 / statistics.median(v),
        )
        for name, v in cpu.items()
    ]


def _capture_row(name: str, outcomes: list[dict[str, float]]) -> Row:
    def median(key: str) -> float:
        return statistics.median(o[key] for o in outcomes)

    return Row(
        contender=name,
        runs=len(outcomes),
        wall_s=median("wall"),
        mb_s=median("bytes") / median("wall") / 1e6,
        cpu_s=median("cpu"),
        disk_per_byte=median("stored") / median("bytes"),
        identical=None,
        note="disk B per B = stored bytes (chunk blobs, runs, line_times) per output byte",
        extra={
            "times_bytes": median("times"),
            # the exact shares of line times, each run's own (see linetimes)
            "work_share": statistics.median(o["work"] / o["cpu"] for o in outcomes),
            "blob_share": statistics.median(
                o["times"] / (o["stored"] - o["times"]) for o in outcomes
            ),
            "reads": median("reads"),
            "per_read": statistics.median(o["work"] / max(1, o["reads"]) for o in outcomes),
        },
    )


def grep(nbytes: int, runs: int) -> list[Row]:
    """Scan rates over one stored execution of ``nbytes`` of log lines."""
    folder = fresh_dir("find-grep")
    with Outspool(str(folder / "t.db"), Settings.load()) as spool:
        ex = spool.run(producer("stderr", nbytes))
        total = ex.stdout_size + ex.stderr_size
        store = spool.store
        literal = compile_pattern("no such text anywhere")
        regex = compile_pattern(r"worker-[35] request (failed|refused)", ignore_case=True)

        def chunks() -> Iterator[bytes]:
            return iter_output(store, ex.id, None)

        some = compile_pattern(r"worker-[35] request ok")
        bare = compile_pattern(r"\d{9}")
        scans: list[tuple[str, Callable[[], int]]] = [
            (
                "decode the chunks only (floor)",
                lambda: sum(map(len, iter_output(store, ex.id, None))),
            ),
            ("outspool grep: literal, no match", lambda: _count(search(store, ex.id, literal))),
            ("outspool grep: -i regex, no match", lambda: _count(search(store, ex.id, regex))),
            ("outspool grep: regex, 2 lines in 7", lambda: _count(search(store, ex.id, some))),
            (
                "outspool grep: regex with no fixed text, no match",
                lambda: _count(search(store, ex.id, bare)),
            ),
            (
                "Python re alone on each decoded chunk, the regex with no fixed text",
                lambda: sum(len(bare.findall(c.decode("utf-8", "replace"))) for c in chunks()),
            ),
            (
                "outspool grep: every line matches",
                lambda: _count(search(store, ex.id, re.compile("INFO"), None, Window())),
            ),
        ]
        return [_scan_row(name, scan, total, runs) for name, scan in scans]


def _count(found: Iterator[object]) -> int:
    return sum(1 for _ in found)


def _scan_row(name: str, scan: Callable[[], int], total: int, runs: int) -> Row:
    walls, cpus = [], []
    result = 0
    for _ in range(runs):
        cpu, began = time.process_time(), time.monotonic()
        result = scan()
        walls.append(time.monotonic() - began)
        cpus.append(time.process_time() - cpu)
    cpu_s = statistics.median(cpus)
    per_core = total / cpu_s / 1e6 if cpu_s else None
    return Row(
        contender=name,
        runs=runs,
        wall_s=statistics.median(walls),
        mb_s=total / statistics.median(walls) / 1e6,
        cpu_s=cpu_s,
        note=f"{per_core:.0f} MB/s per core; {total / MIB:.0f} MiB; result {result:,}"
        if per_core
        else "",
    )


def since(count: int, runs: int) -> list[Row]:
    """``logs --since``/``--until`` on one stored execution of ``count`` log lines: the
    lines of a window read from the chunks that can hold them, against reading every
    line and filtering (the old way), both in this process."""
    folder = fresh_dir("find-since")
    with Outspool(str(folder / "t.db"), Settings.load()) as spool:
        ex = spool.run(producer("lines", count))
        store = spool.store
        total = ex.stdout_size + ex.stderr_size
        times = [line.ms for line in iter_lines(store, ex.id, None)]
        late = times[len(times) * 99 // 100] / 1000
        early = times[len(times) // 100] / 1000
        scans: list[tuple[str, Callable[[], int]]] = [
            (
                "every line read, then filtered: --since at 99 % of the lines",
                lambda: _count(between(iter_lines(store, ex.id, None), late, None)),
            ),
            (
                "outspool: --since at 99 % of the lines",
                lambda: _count(iter_lines(store, ex.id, None, late, None)),
            ),
            (
                "every line read, then filtered: --until at 1 % of the lines",
                lambda: _count(between(iter_lines(store, ex.id, None), None, early)),
            ),
            (
                "outspool: --until at 1 % of the lines",
                lambda: _count(iter_lines(store, ex.id, None, None, early)),
            ),
        ]
        return [_scan_row(name, scan, total, runs) for name, scan in scans]
