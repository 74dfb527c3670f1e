"""Bounded storage (issue 9): a runaway capture under a 1 MiB limit, and a 10,000-execution prune.

``python -m bench.bounded [--full]`` prints both tables; ``python -m bench --only bounded``
runs the first as part of the suite.

1. ``outspool run --max-output 1MiB -- producer bulk N`` against the same producer
   ``> /dev/null`` and ``| cat > /dev/null`` (the floor of any pipe reader), round by round:
   the wall-time ratios (goal <= 1.5 against /dev/null), the capturing process's own CPU
   (rusage, producer excluded) beside cat's and beside ``outspool run -- true`` (what
   starting costs), and the peak size of the store on disk (database, WAL and segment
   files, sampled every 10 ms).
2. An SQLite store holding 10,000 finished executions (1 KiB of output each, filled with
   plain SQL) is pruned by ``outspool prune --older-than 0s`` in another process, while a
   capture in this process commits a small chunk every 5 ms through the store: the worst
   commit latency during the prune (goal: <= 50 ms) against the median and the worst of
   the same capture over 5 s just before it (what the machine alone costs).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import outspool_api
from bench.common import MIB, Row, fresh_dir, producer
from bench.measure import run_measured
from outspool.codec import Encoder
from outspool.jobs import Job
from outspool.models import Status, Stream
from outspool.settings import Settings
from outspool.store import open_store
from outspool.store.base import OutputUpdate, WriteBatch

LIMIT = "1MiB"
BASELINE_S = 5.0


def disk_usage(db: Path) -> int:
    """Bytes on disk of an SQLite store: its files and its segment folder."""
    paths = [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    folder = db.with_name(db.name + "-chunks")
    if folder.is_dir():
        paths += [p for p in folder.iterdir() if p.is_file()]
    total = 0
    for path in paths:
        try:
            total += path.stat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


class PeakSize(threading.Thread):
    """Samples a store's disk usage every 10 ms until stopped; keeps the peak."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.01):
            self.peak = max(self.peak, disk_usage(self.db))


def piped(size: int) -> tuple[float, float | None]:
    """``producer | cat > /dev/null``: the wall time of the whole pipeline, and cat's own CPU.

    The honest floor of any capture: a pipe reader that does nothing with the bytes."""
    began = time.monotonic()
    made = subprocess.Popen(producer("bulk", size), stdout=subprocess.PIPE)
    assert made.stdout is not None
    with open("/dev/null", "wb") as sink:
        sample = run_measured(["cat"], stdin=made.stdout, stdout=sink)
    made.stdout.close()
    made.wait()
    return time.monotonic() - began, sample.cpu_s


def capture(size: int, runs: int) -> list[Row]:
    """A bulk flood under a 1 MiB limit, against the producer alone and against ``| cat``,
    round by round. CPU: each capturing process's own (rusage; the producer excluded)."""
    devnull: list[float] = []
    cat_wall: list[float] = []
    cat_cpu: list[float] = []
    ours: list[float] = []
    our_cpu: list[float] = []
    start_cpu: list[float] = []
    peaks: list[int] = []
    for n in range(runs):
        with open("/dev/null", "wb") as sink:
            devnull.append(run_measured(producer("bulk", size), stdout=sink).wall_s)
        wall, cpu = piped(size)
        cat_wall.append(wall)
        cat_cpu.append(cpu or 0.0)
        work = fresh_dir(f"bounded-{n}")
        db = work / "outspool.db"
        quiet = [outspool_api.OUTSPOOL, "run", "--db", str(db), "--quiet"]
        nothing = run_measured([*quiet, "--", "true"], stdout=subprocess.DEVNULL)
        start_cpu.append(nothing.cpu_s or 0.0)
        sampler = PeakSize(db)
        sampler.start()
        argv = [*quiet, "--max-output", LIMIT, "--", *producer("bulk", size)]
        sample = run_measured(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sampler.stopped.set()
        sampler.join()
        if sample.exit_code != 0:
            raise SystemExit(f"outspool run failed (exit {sample.exit_code})")
        ours.append(sample.wall_s)
        our_cpu.append(sample.cpu_s or 0.0)
        peaks.append(max(sampler.peak, disk_usage(db)))
    base = statistics.median(devnull)
    floor = statistics.median(cat_wall)
    floor_cpu = statistics.median(cat_cpu)
    wall = statistics.median(ours)
    cpu = statistics.median(our_cpu)
    startup = statistics.median(start_cpu)
    return [
        Row("producer > /dev/null", runs, wall_s=base, mb_s=size / MIB / base),
        Row(
            "producer | cat > /dev/null",
            runs,
            wall_s=floor,
            mb_s=size / MIB / floor,
            cpu_s=floor_cpu,
            note=f"{floor / base:.2f}x /dev/null (wall); cat's CPU {floor_cpu:.2f} s",
        ),
        Row(
            f"outspool run --max-output {LIMIT}",
            runs,
            wall_s=wall,
            mb_s=size / MIB / wall,
            cpu_s=cpu,
            note=(
                f"{wall / base:.2f}x /dev/null, {wall / floor:.2f}x | cat (wall);"
                f" CPU {cpu:.2f} s, of which {startup:.2f} s is starting"
                f" (outspool run -- true), capture {cpu - startup:.2f} s vs cat {floor_cpu:.2f} s;"
                f" peak store {max(peaks) / MIB:.1f} MiB on disk"
            ),
            extra={
                "ratio": wall / base,
                "ratio_vs_cat": wall / floor,
                "cpu_s": cpu,
                "startup_cpu_s": startup,
                "cat_cpu_s": floor_cpu,
                "peak_store_bytes": max(peaks),
            },
        ),
    ]


def fill(db: Path, count: int) -> None:
    """``count`` finished executions with 1 KiB of output each, as the store lays them out."""
    store = open_store(str(db), Settings.load())
    store.close()  # migrated: the schema and auto_vacuum are ours
    old = time.time() - 86400
    rows = [(f"{n:016d}", json.dumps(["true"]), old, old, old) for n in range(count)]
    chunk = b"x" * 1024
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO executions (id, status, command, created_at, started_at, finished_at,"
            " stdout_size, chunk_count) VALUES (?, 'succeeded', ?, ?, ?, ?, 1024, 1)",
            rows,
        )
        conn.executemany(
            "INSERT INTO execution_output_chunks (execution_id, chunk_index, stdout_offset,"
            " stdout_size, stderr_offset, stderr_size, codec, timestamp, stdout)"
            " VALUES (?, 0, 0, 1024, 0, 0, 'raw', ?, ?)",
            [(r[0], old, chunk) for r in rows],
        )


def commit_stall(count: int) -> list[Row]:
    """Commit latency of a capture while another process prunes ``count`` executions."""
    work = fresh_dir("bounded-prune")
    db = work / "outspool.db"
    fill(db, count)
    store = open_store(str(db), Settings.load())
    execution = store.create(
        Job(command=("producer",)), "capture000000000", time.time(), Status.RUNNING, None
    )
    encoder = Encoder()
    latencies: list[tuple[float, float]] = []  # (when, seconds)
    stop = threading.Event()

    def capture() -> None:
        offset, index = 0, 0
        while not stop.wait(0.005):
            data = b"line %08d\n" % index
            record = encoder.encode(execution.id, index, (offset, 0), [(Stream.STDOUT, data)], 0)
            update = OutputUpdate(execution.id, offset + len(data), 0, index + 1, time.time())
            began = time.monotonic()
            store.write(WriteBatch([record], [update]))
            latencies.append((began, time.monotonic() - began))
            offset, index = offset + len(data), index + 1

    thread = threading.Thread(target=capture)
    thread.start()
    time.sleep(BASELINE_S)  # the same capture without a prune: what the machine alone costs
    began = time.monotonic()
    pruned = subprocess.run(
        [outspool_api.OUTSPOOL, "prune", "--db", str(db), "--older-than", "0s", "--json"],
        capture_output=True,
        check=True,
    )
    ended = time.monotonic()
    stop.set()
    thread.join()
    store.close()
    during = [s for t, s in latencies if began <= t <= ended]
    before = [s for t, s in latencies if t < began]
    deleted = json.loads(pruned.stdout)["count"]
    base = statistics.median(before)
    worst_before = max(before)
    worst = max(during) if during else 0.0
    return [
        Row(
            f"prune {deleted:,} executions (outspool prune, another process)",
            1,
            wall_s=ended - began,
            note=(
                f"capture commits during it: {len(during)}, worst {worst * 1000:.1f} ms;"
                f" {BASELINE_S:.0f} s before it: median {base * 1000:.1f} ms,"
                f" worst {worst_before * 1000:.1f} ms"
            ),
            extra={
                "worst_commit_s": worst,
                "baseline_commit_s": base,
                "baseline_worst_commit_s": worst_before,
                "deleted": deleted,
            },
        )
    ]


def stall_rows() -> list[Row]:
    return commit_stall(10_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bounded", description=__doc__)
    parser.add_argument("--full", action="store_true", help="1 GiB, median of 3 runs")
    args = parser.parse_args(argv)
    size, runs = (1024 * MIB, 3) if args.full else (128 * MIB, 1)
    for row in [*capture(size, runs), *commit_stall(10_000)]:
        figures = f"{row.wall_s:.2f} s" if row.wall_s is not None else ""
        print(f"{row.contender}: {figures}  {row.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
