"""What the sandbox costs: trivial jobs per second, start-up per job, capture throughput.

``python -m bench.sandbox [--jobs N] [--mib M]`` prints the table; the suite runs it as the
``sandbox`` scenario. Each figure is measured with and without the sandbox in the same
process, runs interleaved, and reported as a ratio:

- jobs/s: a library ``Worker`` (``--slots``, default 2, burst) runs N queued ``true`` jobs
  (a sandboxed ``outspool worker`` defaults to 4 slots per CPU: ``--slots 8`` on 2 cores),
  sandboxed with warm sandboxes (the default) and without (``bwrap-cold``); the wall each
  sandboxed job adds to the worker is ``1/rate - 1/rate(none)``;
- start-up per job: median wall time of ``Outspool.run(["true"])`` one after another
  (create the record, spawn, capture, record the end), the sandbox's minus none's;
- the floor: ``bwrap`` with the same command line started alone (``subprocess``, no
  store, no capture) against ``true`` alone: what the sandbox itself costs;
- capture MB/s: ``Outspool.run`` of the system ``python3`` writing M MiB of base64 text in
  64 KiB writes, stored byte for byte (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.common import Row, fresh_dir
from outspool import Outspool, Settings
from outspool.jobs import Job
from outspool.process import ChildSetup
from outspool.sandbox import Sandbox, sandbox_user
from outspool.worker import Worker

T = TypeVar("T")
MODES = ("none", "bwrap")
PRODUCER = """
import base64, os, random, sys
random.seed(7)
blocks = [base64.b64encode(random.randbytes(49152)) for _ in range(16)]
left = int(sys.argv[1])
i = 0
while left > 0:
    b = blocks[i % 16][:left]
    if len(sys.argv) > 2:
        sys.argv[2].append(b)
    else:
        os.write(1, b)
    left -= len(b)
    i += 1
"""


def _expected(nbytes: int) -> str:
    """sha256 of what the producer writes (it runs here, collecting instead of writing)."""
    pieces: list[bytes] = []
    exec(
        PRODUCER,
        {"__name__": "producer", "sys": type("S", (), {"argv": ["", str(nbytes), pieces]})},
    )
    return hashlib.sha256(b"".join(pieces)).hexdigest()


def _settings(mode: str) -> Settings:
    """``bwrap-cold``: sandboxed, each built after its job's claim (no warm sandboxes)."""
    box = "none" if mode == "none" else "bwrap"
    return Settings.load(sandbox=box, sandbox_warm=mode == "bwrap", kill_grace=0.5, drain_grace=0.5)


def jobs_per_second(mode: str, db: Path, jobs: int, slots: int = 2) -> float:
    with Outspool(str(db), _settings(mode)) as spool:
        for _ in range(jobs):
            spool.submit(Job(command=("true",)))
    worker = Worker(str(db), _settings(mode), concurrency=slots, burst=True)
    began = time.perf_counter()
    worker.run()
    return jobs / (time.perf_counter() - began)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_seconds(mode: str, db: Path, runs: int) -> tuple[float, float]:
    """Median wall time of one run of ``true``, and the CPU its processes used (mean)."""
    walls = []
    cpu = _children_cpu()
    with Outspool(str(db), _settings(mode)) as spool:
        for _ in range(runs):
            began = time.perf_counter()
            ex = spool.run(["true"], sandbox=mode == "bwrap")
            walls.append(time.perf_counter() - began)
            assert ex.exit_code == 0, ex
    return statistics.median(walls), (_children_cpu() - cpu) / runs


def floor_seconds(mode: str, runs: int) -> tuple[float, float]:
    """Median wall time of starting ``true`` alone, or in the sandbox exactly as a worker
    starts it (as ``nobody`` when root, through the same helper), and its mean CPU."""
    user = ChildSetup(user=sandbox_user(), die_with_parent=False).helpers() or []
    walls = []
    cpu = _children_cpu()
    for _ in range(runs):
        began = time.perf_counter()
        if mode == "bwrap":
            wrapped = Sandbox().wrap(["true"])  # opens /etc's files, as a worker does per job
            subprocess.run([*user, *wrapped.argv], check=True, pass_fds=wrapped.fds)
            wrapped.close()
        else:
            subprocess.run(["true"], check=True)
        walls.append(time.perf_counter() - began)
    return statistics.median(walls), (_children_cpu() - cpu) / runs


def capture_mb_s(mode: str, db: Path, nbytes: int) -> float:
    with Outspool(str(db), _settings(mode)) as spool:
        began = time.perf_counter()
        ex = spool.run(["/usr/bin/python3", "-c", PRODUCER, str(nbytes)], sandbox=mode == "bwrap")
        wall = time.perf_counter() - began
        stored = hashlib.sha256()
        for piece in spool.iter_output(ex.id):
            stored.update(piece)
    assert ex.stdout_size == nbytes, (ex.stdout_size, nbytes)
    return nbytes / wall / 1e6


def _interleaved(
    measure: Callable[[str, Path], T], rounds: int, modes: tuple[str, ...] = MODES
) -> dict[str, list[T]]:
    found: dict[str, list[T]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes:
            found[mode].append(measure(mode, fresh_dir(f"sandbox-{mode}-{r}") / "o.db"))
    return found


def _median(found: dict[str, list[float]]) -> dict[str, float]:
    return {m: statistics.median(v) for m, v in found.items()}


def run(jobs: int = 200, mib: int = 64, rounds: int = 3, slots: int = 2) -> list[Row]:
    """The scenario: one row per mode; the bwrap row carries the ratios in its note."""
    modes = (*MODES, "bwrap-cold")
    rate = _median(_interleaved(lambda m, db: jobs_per_second(m, db, jobs, slots), rounds, modes))
    both = _interleaved(lambda m, db: startup_seconds(m, db, 30), rounds)
    start = _median({m: [w for w, _ in v] for m, v in both.items()})
    cpu = _median({m: [c for _, c in v] for m, v in both.items()})
    floors = _interleaved(lambda m, db: floor_seconds(m, 30), rounds)
    floor = _median({m: [w for w, _ in v] for m, v in floors.items()})
    floor_cpu = _median({m: [c for _, c in v] for m, v in floors.items()})
    mb_s = _median(_interleaved(lambda m, db: capture_mb_s(m, db, mib << 20), rounds))
    rows = []
    for mode in MODES:
        extra = {
            "jobs_per_s": rate[mode],
            "startup_ms": start[mode] * 1000,
            "startup_cpu_ms": cpu[mode] * 1000,
            "floor_ms": floor[mode] * 1000,
            "floor_cpu_ms": floor_cpu[mode] * 1000,
            "capture_mb_s": mb_s[mode],
        }
        rows.append(Row(contender=f"sandbox={mode}", runs=rounds, mb_s=mb_s[mode], extra=extra))
    added = (start["bwrap"] - start["none"]) * 1000
    added_cpu = (cpu["bwrap"] - cpu["none"]) * 1000
    rows[1].extra.update(startup_added_ms=added, startup_added_cpu_ms=added_cpu)
    floor_added = (floor["bwrap"] - floor["none"]) * 1000
    floor_added_cpu = (floor_cpu["bwrap"] - floor_cpu["none"]) * 1000
    per_job = (1 / rate["bwrap"] - 1 / rate["none"]) * 1000
    per_job_cold = (1 / rate["bwrap-cold"] - 1 / rate["none"]) * 1000
    rows[1].extra.update(
        cold_jobs_per_s=rate["bwrap-cold"], worker_added_ms=per_job, cold_added_ms=per_job_cold
    )
    rows[1].note = (
        f"jobs/s x{rate['bwrap'] / rate['none']:.2f} of none, +{per_job:.1f} ms per job"
        f" (without warm sandboxes {rate['bwrap-cold']:.0f} jobs/s, +{per_job_cold:.1f} ms);"
        f" start-up of one run +{added:.1f} ms wall,"
        f" +{added_cpu:.1f} ms CPU per job (bwrap alone: +{floor_added:.1f} ms wall,"
        f" +{floor_added_cpu:.1f} ms CPU); capture x{mb_s['bwrap'] / mb_s['none']:.2f} of none"
    )
    return rows


def table(rows: list[Row], slots: int = 2) -> str:
    lines = [
        f"| mode | jobs/s ({slots} slots) | run of `true`: wall ms | CPU ms | added wall ms"
        " | added CPU ms | started alone: wall ms | CPU ms | capture MB/s | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.extra
        added = [e.get(k) for k in ("startup_added_ms", "startup_added_cpu_ms")]
        shown = " | ".join("-" if a is None else f"{a:.1f}" for a in added)
        lines.append(
            f"| {r.contender} | {e['jobs_per_s']:.0f} | {e['startup_ms']:.1f}"
            f" | {e['startup_cpu_ms']:.1f} | {shown} | {e['floor_ms']:.1f}"
            f" | {e['floor_cpu_ms']:.1f} | {e['capture_mb_s']:.0f} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=2, help="the worker's concurrency")
    args = parser.parse_args(argv)
    print(table(run(args.jobs, args.mib, args.rounds, args.slots), args.slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
