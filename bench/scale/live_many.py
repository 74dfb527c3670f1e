"""Many live executions: one worker running N programs at once, each printing a line
every 100 ms; a follower in another process watches a sample of them.

The N jobs (``common.ticker``: ``SEQ SEND_TIME tick``) are queued, then one
``outspool worker --concurrency N`` runs them all; ``follow_many.py`` follows 20 of them
through the library. Measured: visibility latency (send time -> follower) p50/p99, the
worker's peak RSS, threads and open files, and its CPU per captured line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, fresh_dir
from bench.scale import plots
from bench.scale.common import (
    OUTSPOOL,
    Section,
    Watch,
    backends,
    log,
    ms,
    plot_path,
    table,
    ticker,
    wait_for_line,
)

FOLLOWED = 20
INTERVAL = 0.1


def run(full: bool) -> Section:
    counts = (100, 300, 1000) if full else (25, 50)
    seconds = 10.0 if full else 3.0
    mode = "full" if full else "quick"
    work = fresh_dir("live")
    results: dict[str, dict[int, dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    try:
        for backend, url, why in backends(work, "live"):
            if url is None:
                missing[backend] = why
                continue
            results[backend] = {}
            for n in counts:
                target = url if backend == "postgres" else str(work / f"live{n}.db")
                results[backend][n] = _one(target, n, seconds, work)
                log(f"[live] {backend} {n}: {results[backend][n]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _section(mode, seconds, results, missing)


def _one(url: str, n: int, seconds: float, work: Path) -> dict[str, Any]:
    from outspool import Outspool

    lines_each = int(seconds / INTERVAL)
    with Outspool(url) as spool:
        ids = [spool.submit(ticker(INTERVAL, lines_each)).id for _ in range(n)]
    follower = subprocess.Popen(
        [PYTHON, "-m", "bench.scale.follow_many", url, "2", *ids[:: max(1, n // FOLLOWED)]],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    wait_for_line(follower, b"following", 60)
    began = time.monotonic()
    worker = subprocess.Popen(
        [OUTSPOOL, "worker", "--db", url, "--burst", "--concurrency", str(n)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "worker.err").open("wb"),
    )
    watch = Watch(worker.pid)
    watch.start()
    worker.wait(seconds * 20 + 120)
    usage = watch.stop()
    wall = time.monotonic() - began
    out, _ = follower.communicate(timeout=120)
    got = json.loads(out)
    with Outspool(url) as spool:
        records = [spool.get(i) for i in ids]
        stored = sum(len(spool.read(i).splitlines()) for i in ids[:FOLLOWED])
    starts = [r.started_at for r in records if r.started_at]
    return {
        **ms(got["latencies"]),
        "wall_s": wall,
        "start_spread_s": max(starts) - min(starts) if starts else None,
        "succeeded": sum(r.status.value == "succeeded" for r in records),
        "rss_mb": usage.rss_mb,
        "threads": usage.threads,
        "fds": usage.fds,
        "cpu_s": usage.cpu_s,
        "cpu_us_per_line": usage.cpu_s / (n * lines_each) * 1e6,
        "lines_seen": got["lines"],
        "stored_sample_lines": stored,
        "lines_expected_sample": lines_each * FOLLOWED,
    }


def _section(
    mode: str,
    seconds: float,
    results: dict[str, dict[int, dict[str, Any]]],
    missing: dict[str, str],
) -> Section:
    section = Section(
        "live",
        f"many live executions: one worker, N programs each printing a line every"
        f" {INTERVAL * 1000:.0f} ms for {seconds:.0f} s; a follower process on {FOLLOWED} of them",
        data={b: {str(n): r for n, r in res.items()} for b, res in results.items()},
    )
    section.body += [f"- **{b}: NOT RUN**: {why}" for b, why in missing.items()]
    rows = [
        [b, n, r.get("p50_ms"), r.get("p99_ms"), r["rss_mb"], r["threads"], r["fds"],
         r["cpu_us_per_line"], r["wall_s"], r["start_spread_s"], f"{r['succeeded']}/{n}"]
        for b, res in results.items()
        for n, r in res.items()
    ]  # fmt: skip
    section.body += table(
        ["backend", "programs", "p50 ms", "p99 ms (goal 100)", "worker RSS MB (goal 256)",
         "threads", "fds", "CPU µs / line", "wall s", "starts spread s", "succeeded"],
        rows,
    )  # fmt: skip
    for key, label, goal in (
        ("p99_ms", "visibility p99 ms", 100.0),
        ("rss_mb", "worker RSS MB", 256.0),
    ):
        series = {b: [(n, r.get(key)) for n, r in res.items()] for b, res in results.items()}
        name = plots.lines(
            plot_path(mode, f"live-{key.split('_')[0]}"),
            f"many live executions: {label}",
            "programs running at once in one worker",
            label,
            series,
            goal=goal,
        )
        if name:
            section.plots.append(name)
    return section
