"""Store growth: the cost of everyday reads at 1,000 / 100,000 / 1,000,000 executions.

Per backend, one store grows in steps (bulk-filled, see ``fill.py``) around one large
output captured for real and 20 executions left ``running``. At each step every read is
timed many times in this process through the library (p50/p99), and a few times through
the CLI as a user runs it (a new process each time: start-up included).
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import MIB, fresh_dir, producer
from bench.scale import fill, plots
from bench.scale.common import (
    OUTSPOOL,
    Section,
    backends,
    latencies,
    log,
    ms,
    plot_path,
    table,
    ticker,
)


@dataclass(frozen=True)
class Sizes:
    steps: tuple[int, ...]
    big: int
    lib_repeats: int
    cli_repeats: int
    follow_repeats: int


QUICK = Sizes((1_000, 10_000), 32 * MIB, 100, 3, 5)
FULL = Sizes((1_000, 100_000, 1_000_000), 1024 * MIB, 100, 5, 10)
RUNNING = 20
LIB_OPS = (
    "ls (first page)",
    "ls --status succeeded",
    "ls --status running",
    "show",
    "tail 100 lines (large output)",
    "64 KiB range mid large output",
    "follow a new execution",
)
CLI_OPS = (
    "outspool ls",
    "outspool ls --status running",
    "outspool show",
    "outspool logs --tail 100",
)


def run(full: bool) -> Section:
    sizes = FULL if full else QUICK
    mode = "full" if full else "quick"
    work = fresh_dir("growth")
    results: dict[str, Any] = {}
    notes: dict[str, str] = {}
    try:
        for backend, url, missing in backends(work, "growth"):
            if url is None:
                notes[backend] = missing
                continue
            results[backend] = _grow(url, sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _section(mode, sizes, results, notes)


def _grow(url: str, sizes: Sizes, work: Path) -> dict[str, Any]:
    from outspool import Outspool, Stream

    out: dict[str, Any] = {"steps": {}}
    t0 = time.time() - fill.SPAN - 3600
    with Outspool(url) as spool:
        big = spool.run(producer("bulk", sizes.big))
        for _ in range(RUNNING):
            _leave_running(spool)
        have = 0
        for n in sizes.steps:
            took = fill.fill(url, have, n, t0)
            log(f"[growth] {url.split('?', maxsplit=1)[0][-40:]}: filled to {n:,} in {took:.1f} s")
            have = n
            ids = fill.random_ids(url, 500)
            ops = _lib_ops(spool, big.id, big.stdout_size, ids, Stream.STDOUT)
            step: dict[str, Any] = {"fill_s": took}
            for name, op in ops.items():
                walls, cpus = _time(op, sizes.lib_repeats)
                step[name] = {**ms(walls), "cpu_p50_ms": statistics.median(cpus) * 1000}
            step["follow a new execution"] = ms(_follow_new(spool, sizes.follow_repeats))
            for name, argv in _cli_ops(url, big.id, ids[0]).items():
                step[name] = ms(_time_cli(argv, sizes.cli_repeats))
            out["steps"][n] = step
            log(f"[growth]   at {n:,}: " + ", ".join(
                f"{k} {v.get('p99_ms', 0):.2f}" for k, v in step.items() if isinstance(v, dict)
            ))  # fmt: skip
    return out


def _leave_running(spool: Any) -> None:
    """An execution recorded as running (its program is not alive; nobody recovers here)."""
    from outspool import Job
    from outspool.jobs import new_id

    spool.store.create(Job(command=("sleep", "3600")), new_id(), time.time())


def _lib_ops(
    spool: Any, big: str, size: int, ids: list[str], stdout: Any
) -> dict[str, Callable[[], Any]]:
    from outspool import Status

    rng = random.Random(5)
    return {
        "ls (first page)": lambda: spool.list(limit=50),
        "ls --status succeeded": lambda: spool.list(Status.SUCCEEDED, limit=50),
        "ls --status running": lambda: spool.list(Status.RUNNING, limit=50),
        "show": lambda: spool.get(rng.choice(ids)),
        "tail 100 lines (large output)": lambda: spool.tail(big, 100),
        "64 KiB range mid large output": lambda: spool.output(big, stdout, size // 2, 65536),
    }


def _time(op: Callable[[], Any], repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (this thread's: all of SQLite's work, not PostgreSQL's server)
    of each of ``repeats`` calls, after 3 unmeasured ones."""
    for _ in range(3):
        op()
    walls, cpus = [], []
    for _ in range(repeats):
        began, cpu = time.perf_counter(), time.thread_time()
        op()
        walls.append(time.perf_counter() - began)
        cpus.append(time.thread_time() - cpu)
    return walls, cpus


def _follow_new(spool: Any, repeats: int) -> list[float]:
    """Visibility of a new execution's first line to a follower (line's send time -> seen)."""
    seen: list[float] = []
    for _ in range(repeats):
        handle = spool.start(ticker(0.0, 1))
        got: list[float] = []

        def follow(eid: str = handle.id, into: list[float] = got) -> None:
            for _stream, piece in spool.follow(eid):
                latencies(piece, time.time(), into)

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        handle.wait(30)
        thread.join(30)
        seen.extend(got[:1])
    return seen


def _cli_ops(url: str, big: str, some: str) -> dict[str, list[str]]:
    db = ["--db", url]
    return {
        "outspool ls": [OUTSPOOL, "ls", *db],
        "outspool ls --status running": [OUTSPOOL, "ls", "--status", "running", *db],
        "outspool show": [OUTSPOOL, "show", some, *db],
        "outspool logs --tail 100": [OUTSPOOL, "logs", big, "--tail", "100", *db],
    }


def _time_cli(argv: list[str], repeats: int) -> list[float]:
    took = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        took.append(time.perf_counter() - began)
    return took


def _section(mode: str, sizes: Sizes, results: dict[str, Any], notes: dict[str, str]) -> Section:
    steps = sizes.steps
    big = (
        f"{sizes.big // MIB} MiB" if sizes.big < 1024 * MIB else f"{sizes.big // (1024 * MIB)} GiB"
    )
    title = (
        f"store growth: {', '.join(f'{n:,}' for n in steps)} finished executions"
        f" (+ {RUNNING} running, + one {big} output)"
    )
    section = Section("growth", title, data={"sizes": list(steps), "results": results})
    section.body += [
        f"Library calls: p50 / p99 over {sizes.lib_repeats} calls in one process"
        f" ({sizes.follow_repeats} for following); CLI: wall time of a new `outspool` process,"
        f" {sizes.cli_repeats} runs (interpreter start-up included). Goal: p99 at"
        f" {steps[-1]:,} within 2x of {steps[0]:,}, library p99 <= 20 ms on SQLite.",
        "",
    ]
    for backend, why in notes.items():
        section.body += [f"- **{backend}: NOT RUN**: {why}", ""]
    heads = [
        "backend",
        "call",
        *(f"p50 / p99 ms at {n:,}" for n in steps),
        "p99 ÷ first",
        "verdict",
    ]
    rows = []
    for backend, res in results.items():
        for op in (*LIB_OPS, *CLI_OPS):
            cells = [res["steps"][n].get(op, {}) for n in steps]
            first, last = cells[0].get("p99_ms"), cells[-1].get("p99_ms")
            ratio = last / first if first and last else None
            rows.append(
                [backend, op, *(_pair(c) for c in cells), ratio, _verdict(backend, op, ratio, last)]
            )
    section.body += table(heads, rows)
    section.body += [
        "",
        "CPU per library call, p50 ms (the calling thread's: all of SQLite's work; on"
        " PostgreSQL the server's is not in it). Unlike wall-clock percentiles, this holds"
        " under load, so it shows what grows with the store on a busy machine too.",
        "",
    ]
    cpu_rows = [
        [backend, op, *(f"{res['steps'][n].get(op, {}).get('cpu_p50_ms', 0):.3f}" for n in steps)]
        for backend, res in results.items()
        for op in LIB_OPS
        if "cpu_p50_ms" in res["steps"][steps[0]].get(op, {})
    ]
    section.body += table(["backend", "call", *(f"at {n:,}" for n in steps)], cpu_rows)
    section.body += ["", "Filling took: " + "; ".join(
        f"{b} " + ", ".join(f"{res['steps'][n]['fill_s']:.0f} s to {n:,}" for n in steps)
        for b, res in results.items()
    )]  # fmt: skip
    for backend, res in results.items():
        series = {op: [(n, res["steps"][n][op].get("p99_ms")) for n in steps] for op in LIB_OPS}
        name = plots.lines(
            plot_path(mode, f"growth-{backend}"),
            f"store growth, {backend}: library p99",
            "finished executions in the store",
            "p99 ms",
            series,
            logx=True,
            logy=True,
            goal=20.0 if backend == "sqlite" else None,
        )
        if name:
            section.plots.append(name)
    return section


def _pair(cell: dict[str, float]) -> str:
    if not cell:
        return "-"
    return f"{cell['p50_ms']:.2f} / {cell['p99_ms']:.2f}"


def _verdict(backend: str, op: str, ratio: float | None, last: float | None) -> str:
    if ratio is None or last is None:
        return "NOT MEASURED"
    if op.startswith("outspool") or op.startswith("follow"):
        return "met" if ratio <= 2.0 else "**NOT MET**"
    ok = ratio <= 2.0 and (backend != "sqlite" or last <= 20.0)
    return "met" if ok else "**NOT MET**"
