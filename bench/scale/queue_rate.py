"""Queue throughput: trivial jobs drained by 1, 4 and 8 worker processes, each job once.

Per backend and worker count: a fresh store, J jobs submitted through the library
(``sh -c 'echo $OUTSPOOL_EXECUTION_ID'``), then W ``outspool worker --burst
--concurrency 4`` started together. Jobs/s = J / (wall from starting the workers until
the last one exited, their start-up included). CPU per job = the workers' CPU (start-up
included) and their programs' (each worker's ``wait4`` rusage) / J: what a job costs
whatever else the machine runs, where jobs/s on a shared machine also says how much CPU
was left.
Exactly once: every job ended ``succeeded`` and its stored output is its own ID once
(a second run would add a line).

Jobs run unsandboxed (``OUTSPOOL_SANDBOX=none``): this is the queue's own cost; what
the sandbox adds to each job is the ``sandbox`` scenario (``bench/sandbox.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import fresh_dir
from bench.scale import plots
from bench.scale.common import OUTSPOOL, Section, log, pg_schema, pg_unavailable, plot_path, table

WORKERS = (1, 4, 8)
CONCURRENCY = 4


def run(full: bool) -> Section:
    jobs = 1500 if full else 150  # the rate is steady from 500 jobs on (docs/performance.md)
    mode = "full" if full else "quick"
    work = fresh_dir("queue")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    missing = pg_unavailable()
    try:
        for backend in ("sqlite", "postgres"):
            if backend == "postgres" and missing:
                continue
            results[backend] = {}
            for w in WORKERS:
                results[backend][w] = _one(backend, work, w, jobs)
                log(f"[queue] {backend} x{w}: {results[backend][w]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _section(mode, jobs, results, missing)


def _one(backend: str, work: Path, workers: int, jobs: int) -> dict[str, Any]:
    if backend == "sqlite":
        return _drain(str(work / f"q{workers}.db"), work, workers, jobs)
    with pg_schema(f"queue{workers}") as url:
        return _drain(url, work, workers, jobs)


def _drain(
    url: str,
    work: Path,
    workers: int,
    jobs: int,
    *,
    sandbox: str = "none",
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    from outspool import Outspool

    command = ["sh", "-c", 'echo "$OUTSPOOL_EXECUTION_ID"']
    with Outspool(url) as spool:
        began = time.monotonic()
        ids = [spool.submit(command).id for _ in range(jobs)]
        submit_s = time.monotonic() - began
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            [OUTSPOOL, "worker", "--db", url, "--burst", "--concurrency", str(concurrency)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OUTSPOOL_SANDBOX": sandbox},
        )
        for _ in range(workers)
    ]
    codes, cpu = [], 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)  # its rusage includes its reaped programs
        proc.returncode = os.waitstatus_to_exitcode(status)
        codes.append(proc.returncode)
        cpu += usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - began
    with Outspool(url) as spool:
        succeeded = sum(spool.get(i).status.value == "succeeded" for i in ids)
        once = sum(spool.read(i) == f"{i}\n".encode() for i in ids)
    return {
        "jobs": jobs,
        "submit_per_s": jobs / submit_s,
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "cpu_ms_per_job": cpu * 1000 / jobs,
        "ran_once": once,
        "succeeded": succeeded,
        "exactly_once": once == jobs and succeeded == jobs,
        "worker_exit_codes": sorted(set(codes)),
    }


def _section(
    mode: str, jobs: int, results: dict[str, dict[int, dict[str, Any]]], missing: str | None
) -> Section:
    section = Section(
        "queue",
        f"queue throughput: {jobs:,} trivial jobs, 1/4/8 worker processes"
        f" (--concurrency {CONCURRENCY} each, jobs unsandboxed)",
        data={str(b): {str(w): r for w, r in res.items()} for b, res in results.items()},
    )
    if missing:
        section.body += [f"- **postgres: NOT RUN**: {missing}", ""]
    rows = [
        [b, w, r["jobs_per_s"], r["cpu_ms_per_job"], r["wall_s"], r["submit_per_s"],
         "yes" if r["exactly_once"] else
         f"**NO** ({r['ran_once']} ran once, {r['succeeded']} succeeded)",
         "met" if r["jobs_per_s"] >= 300 else "**NOT MET**"]
        for b, res in results.items()
        for w, r in res.items()
    ]  # fmt: skip
    section.body += table(
        ["backend", "workers", "jobs/s", "CPU ms/job", "wall s", "submits/s",
         "each exactly once", ">= 300/s"],
        rows,
    )  # fmt: skip
    series = {b: [(w, r["jobs_per_s"]) for w, r in res.items()] for b, res in results.items()}
    name = plots.lines(
        plot_path(mode, "queue"),
        "queue throughput of trivial jobs",
        "worker processes",
        "jobs/s",
        series,
        goal=300.0,
    )
    if name:
        section.plots.append(name)
    return section


def main(argv: list[str] | None = None) -> int:
    """One configuration, printed as JSON: what a change to the worker is measured with."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.scale.queue_rate", description=__doc__)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--sandbox", choices=("none", "bwrap"), default="none")
    args = parser.parse_args(argv)
    work = fresh_dir("queue-one")
    options: dict[str, Any] = {"sandbox": args.sandbox, "concurrency": args.concurrency}
    try:
        if args.backend == "sqlite":
            url = str(work / "q.db")
            found = _drain(url, work, args.workers, args.jobs, **options)
        else:
            with pg_schema("queueone") as url:
                found = _drain(url, work, args.workers, args.jobs, **options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open("/proc/loadavg") as f:
        found["loadavg"] = f.read().split()[:3]
    print(json.dumps({**vars(args), **found}))
    return 0 if found["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
