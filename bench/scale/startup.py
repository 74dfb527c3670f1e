"""Start-up: from ``submit`` to the program's first instruction, on an idle worker.

The job is ``date +%s.%N``: the time it prints is (within a millisecond of exec) its
first instruction; the submit time is taken just before ``Outspool.submit``. Jobs are
submitted one at a time, a random 50-300 ms after the previous one ended, so the worker
is idle each time. The reference: the same program started by ``subprocess.run`` here.
Each backend is measured with the worker's default (jobs sandboxed) and unsandboxed
(``OUTSPOOL_SANDBOX=none``: the queue's own part). Then the worker is left idle for
:data:`IDLE_S` seconds and its CPU read from ``/proc``: what waiting for jobs costs
(PostgreSQL: a LISTEN connection; SQLite: a look at ``data_version`` every
``poll_interval``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import fresh_dir
from bench.measure import stat_cpu
from bench.scale import plots
from bench.scale.common import OUTSPOOL, Section, backends, log, ms, plot_path, table

PROGRAM = ["date", "+%s.%N"]
IDLE_S = 5.0


def run(full: bool) -> Section:
    repeats = 60 if full else 15
    mode = "full" if full else "quick"
    work = fresh_dir("startup")
    results: dict[str, Any] = {"subprocess.run (reference)": ms(_reference(repeats))}
    missing: dict[str, str] = {}
    try:
        for backend, url, why in backends(work, "startup"):
            if url is None:
                missing[backend] = why
                continue
            for sandbox in ("bwrap", "none"):
                took, idle_cpu = _measure(url, repeats, work, sandbox)
                how = backend if sandbox == "bwrap" else f"{backend}, unsandboxed"
                results[how] = {**ms(took), "idle_cpu_ms_per_s": idle_cpu}
                log(f"[startup] {how}: {results[how]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = Section(
        "startup",
        f"start-up: submit -> the program's first instruction, idle worker ({repeats} jobs)",
        data=results,
    )
    section.body += [f"- **{b}: NOT RUN**: {why}" for b, why in missing.items()]
    rows = [
        [name, r.get("p50_ms"), r.get("p99_ms"), r.get("max_ms"), r.get("idle_cpu_ms_per_s", "")]
        for name, r in results.items()
    ]
    section.body += table(["how", "p50 ms", "p99 ms", "max ms", "idle worker CPU ms per s"], rows)
    name = plots.bars(
        plot_path(mode, "startup"),
        "submit -> first instruction on an idle worker",
        "ms",
        {k: {"p50": v.get("p50_ms", 0.0), "p99": v.get("p99_ms", 0.0)} for k, v in results.items()},
    )
    if name:
        section.plots.append(name)
    return section


def _reference(repeats: int) -> list[float]:
    took = []
    for _ in range(repeats):
        began = time.time()
        out = subprocess.run(PROGRAM, capture_output=True, check=True).stdout
        took.append(float(out) - began)
    return took


def _measure(url: str, repeats: int, work: Path, sandbox: str) -> tuple[list[float], float]:
    """Start-up of ``repeats`` jobs; then the idle worker's CPU in ms per second."""
    from outspool import Outspool

    rng = random.Random(7)
    errors = (work / "worker.err").open("wb")
    worker = subprocess.Popen(
        [OUTSPOOL, "worker", "--db", url, "--concurrency", "2"],
        stdout=subprocess.DEVNULL,
        stderr=errors,
        env={**os.environ, "OUTSPOOL_SANDBOX": sandbox},
    )
    took: list[float] = []
    try:
        with Outspool(url) as spool:
            _wait_started(work / "worker.err")
            for _ in range(repeats):
                time.sleep(rng.uniform(0.05, 0.3))
                began = time.time()
                ex = spool.submit(PROGRAM)
                _wait_finished(spool, ex.id)
                took.append(float(spool.read(ex.id)) - began)
        stat = Path(f"/proc/{worker.pid}/stat")
        before = stat_cpu(stat) or 0.0
        time.sleep(IDLE_S)
        idle_cpu = ((stat_cpu(stat) or 0.0) - before) * 1000 / IDLE_S
    finally:
        worker.terminate()
        worker.wait(30)
        errors.close()
    return took, idle_cpu


def _wait_started(err: Path) -> None:
    deadline = time.monotonic() + 30
    while b"started" not in err.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {err.read_text()[-500:]}")
        time.sleep(0.01)


def _wait_finished(spool: Any, execution_id: str) -> None:
    deadline = time.monotonic() + 30
    while not spool.get(execution_id).status.finished:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{execution_id} did not finish")
        time.sleep(0.005)
