"""Start-up: from ``submit`` to the program's first instruction, on an idle worker.

The job is ``date +%s.%N``: the time it prints is (within a millisecond of exec) its
first instruction; the submit time is taken just before ``Outspool.submit``. Jobs are
submitted one at a time, a random 50-300 ms after the previous one ended, so the worker
is idle each time. The reference: the same program started by ``subprocess.run`` here.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import fresh_dir
from bench.scale import plots
from bench.scale.common import OUTSPOOL, Section, backends, log, ms, plot_path, table

PROGRAM = ["date", "+%s.%N"]


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
            results[backend] = ms(_measure(url, repeats, work))
            log(f"[startup] {backend}: {results[backend]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = Section(
        "startup",
        f"start-up: submit -> the program's first instruction, idle worker ({repeats} jobs)",
        data=results,
    )
    section.body += [f"- **{b}: NOT RUN**: {why}" for b, why in missing.items()]
    rows = [
        [name, r.get("p50_ms"), r.get("p99_ms"), r.get("max_ms")] for name, r in results.items()
    ]
    section.body += table(["how", "p50 ms", "p99 ms", "max ms"], rows)
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


def _measure(url: str, repeats: int, work: Path) -> list[float]:
    from outspool import Outspool

    rng = random.Random(7)
    errors = (work / "worker.err").open("wb")
    worker = subprocess.Popen(
        [OUTSPOOL, "worker", "--db", url, "--concurrency", "2"],
        stdout=subprocess.DEVNULL,
        stderr=errors,
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
    finally:
        worker.terminate()
        worker.wait(30)
        errors.close()
    return took


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
