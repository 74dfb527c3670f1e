"""Many watchers: hundreds of SSE clients on one running execution, plus one each on others,
through ``outspool serve``.

Per backend and size: 1 + OTHERS ticker jobs are queued (the main one prints a line every
100 ms, the others every second, all after a 1 s pause), ``outspool serve`` starts on a
free loopback port, ``sse_clients.py`` opens W streams on the main execution and one on
each other one, then one ``outspool worker`` runs the jobs. Latency: a line's send time
-> its arrival at a client (commit -> client, plus the ~5 ms from write to commit).
Server RSS and CPU are sampled from /proc while the jobs run. The clients are spread over
CLIENT_PROCESSES processes (each reports its CPU), and a library follower of the main execution
in a process of its own gives the same latency without the server, for comparison.

``BENCH_WATCHERS=sqlite:500,postgres:100`` runs only those configurations (backend and W).
``BENCH_TRACE=1`` runs the worker and the server under ``bench.scale.trace`` and adds, to each
result, where the main execution's lines spent their time (stage by stage, ms after the write).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.common import PYTHON, fresh_dir
from bench.scale import plots, trace
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

CLIENT_PROCESSES = 4  # one process reading 600 streams would measure itself
URL_LINE = re.compile(rb"at http://([\d.]+):(\d+)/")
ROOT = Path(__file__).resolve().parents[2]
TRACE = os.environ.get("BENCH_TRACE") == "1"


def _chosen(backend: str, main: int) -> bool:
    only = os.environ.get("BENCH_WATCHERS")
    return not only or f"{backend}:{main}" in only.split(",")


def run(full: bool) -> Section:
    sizes = ((100, 100), (500, 100)) if full else ((50, 20),)
    seconds = 10.0 if full else 4.0
    mode = "full" if full else "quick"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server holds a socket each
    work = fresh_dir("watchers")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    missing: dict[str, str] = {}
    try:
        for backend, url, why in backends(work, "watch"):
            if url is None:
                missing[backend] = why
                continue
            results[backend] = {}
            for main, others in sizes:
                if not _chosen(backend, main):
                    continue
                target = url if backend == "postgres" else str(work / f"w{main}.db")
                key = f"{main} + {others}"
                results[backend][key] = _one(target, main, others, seconds, work)
                log(f"[watchers] {backend} {key}: {results[backend][key]}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        shutil.rmtree(work, ignore_errors=True)
    return _section(mode, seconds, results, missing)


def _one(url: str, main: int, others: int, seconds: float, work: Path) -> dict[str, Any]:
    from outspool import Outspool

    with Outspool(url) as spool:
        first = spool.submit(ticker(0.1, int(seconds / 0.1), 1.0)).id
        rest = [spool.submit(ticker(1.0, int(seconds), 1.0)).id for _ in range(others)]
    command = [OUTSPOOL] if not TRACE else [PYTHON, "-m", "bench.scale.trace", "serve",
                                            str(work / "serve.trace")]  # fmt: skip
    server = subprocess.Popen(
        [*command, "serve", "--db", url, "--port", "0"], stderr=subprocess.PIPE, cwd=ROOT
    )
    try:
        return _watch(url, server, first, rest, main=main, seconds=seconds, work=work)
    finally:
        server.terminate()
        server.wait(30)


def _watch(
    url: str,
    server: subprocess.Popen[bytes],
    first: str,
    rest: list[str],
    *,
    main: int,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    assert server.stderr is not None
    found = URL_LINE.search(server.stderr.readline())
    if found is None:
        raise RuntimeError("outspool serve printed no URL")
    host, port = found.group(1).decode(), found.group(2).decode()
    clients = [
        subprocess.Popen(
            [PYTHON, "-m", "bench.scale.sse_clients", host, port, "2", str(seconds * 6 + 60),
             *part],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for part in _split(first, main, rest, CLIENT_PROCESSES)
    ]  # fmt: skip
    for proc in clients:
        wait_for_line(proc, b"connected", 120)
    direct = subprocess.Popen(  # the library following the main execution, not through HTTP
        [PYTHON, "-m", "bench.scale.follow_many", url, "2", first], stdout=subprocess.PIPE, cwd=ROOT
    )
    wait_for_line(direct, b"following", 120)
    watch = Watch(server.pid)
    watch.start()
    if os.environ.get("BENCH_PROFILE"):
        subprocess.Popen([*os.environ["BENCH_PROFILE"].split(), "--pid", str(server.pid)])
    command = [OUTSPOOL] if not TRACE else [PYTHON, "-m", "bench.scale.trace", "worker",
                                            str(work / "worker.trace")]  # fmt: skip
    worker = subprocess.Popen(
        [*command, "worker", "--db", url, "--burst", "--concurrency", str(len(rest) + 1)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "worker.err").open("wb"),
        cwd=ROOT,
    )
    got = [json.loads(proc.communicate(timeout=seconds * 6 + 120)[0]) for proc in clients]
    usage = watch.stop()
    worker.wait(120)
    expected = main * int(seconds / 0.1) + len(rest) * int(seconds)
    traced = {}
    if TRACE:
        server.terminate()  # it writes its trace on the way out
        server.wait(30)
        traced["trace"] = found = trace.analyse(
            json.loads((work / "worker.trace").read_text()),
            json.loads((work / "serve.trace").read_text()),
            [a for g in got for a in g["arrivals"]],
            first,
            2,
        )
        found["server_cpu_per_event_us"] = round(usage.cpu_s / max(1, expected) * 1e6)
    return {
        **ms([x for g in got for x in g["latencies"]]),
        **{
            f"direct_{k}": v
            for k, v in ms(json.loads(direct.communicate(timeout=120)[0])["latencies"]).items()
        },
        "clients": main + len(rest),
        "lines_expected": expected,
        "lines_seen": sum(g["lines"] for g in got),
        "finished": sum(g["finished"] for g in got),
        "errors": [e for g in got for e in g["errors"]],
        "client_cpu_s": max(g["cpu_s"] for g in got),
        "server_rss_mb": usage.rss_mb,
        "server_cpu_s": usage.cpu_s,
        "server_threads": usage.threads,
        "server_fds": usage.fds,
        **traced,
    }


def _split(first: str, main: int, rest: list[str], processes: int) -> list[list[str]]:
    """The streams to open, as ``ID:COUNT`` arguments of ``processes`` client processes."""
    parts: list[list[str]] = [[] for _ in range(processes)]
    for n, part in enumerate(parts):
        count = main // processes + (1 if n < main % processes else 0)
        if count:
            part.append(f"{first}:{count}")
        part += [f"{i}:1" for i in rest[n::processes]]
    return [p for p in parts if p]


def _section(
    mode: str,
    seconds: float,
    results: dict[str, dict[str, dict[str, Any]]],
    missing: dict[str, str],
) -> Section:
    section = Section(
        "watchers",
        f"many watchers: W SSE clients on one execution (a line every 100 ms) + one on each of"
        f" N others (a line a second), {seconds:.0f} s, through `outspool serve`",
        data=results,
    )
    section.body += [f"- **{b}: NOT RUN**: {why}" for b, why in missing.items()]
    rows = [
        [b, key, r.get("p50_ms"), r.get("p99_ms"), r.get("direct_p50_ms"), r.get("direct_p99_ms"),
         r["server_rss_mb"], r["server_cpu_s"], r["server_threads"], r["client_cpu_s"],
         f"{r['lines_seen']:,}/{r['lines_expected']:,}", f"{r['finished']}/{r['clients']}",
         len(r["errors"])]
        for b, res in results.items()
        for key, r in res.items()
    ]  # fmt: skip
    section.body += table(
        ["backend", "W + N clients", "p50 ms", "p99 ms (goal 100)", "library follower p50 ms",
         "its p99 ms", "server RSS MB", "server CPU s", "server threads",
         f"CPU s of each of {CLIENT_PROCESSES} client processes (most)", "lines seen",
         "streams ended", "errors"],
        rows,
    )  # fmt: skip
    section.body += _trace_table(results)
    series = {
        b: [(r["clients"], r.get("p99_ms")) for r in res.values()] for b, res in results.items()
    }
    name = plots.lines(
        plot_path(mode, "watchers"),
        "many watchers: commit -> client p99",
        "SSE clients",
        "p99 ms",
        series,
        goal=100.0,
    )
    if name:
        section.plots.append(name)
    return section


def _trace_table(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Where the main execution's lines spent their time (runs with ``BENCH_TRACE=1``)."""
    stages = ("read", "commit", "poke", "kept", "first_write", "write", "last_write", "client",
              "client_minus_write_by_rank")  # fmt: skip
    rows = [
        [b, key, *(f"{t['main'][s].get('p50')} / {t['main'][s].get('p99')}" for s in stages),
         f"{t['writes']['count']:,} / {t['writes']['lines']:,}", t["server_cpu_per_event_us"]]
        for b, res in results.items()
        for key, r in res.items()
        if (t := r.get("trace"))
    ]  # fmt: skip
    if not rows:
        return []
    return [
        "",
        "Where the main execution's lines spent their time (`BENCH_TRACE=1`, bench/scale/trace.py):"
        " ms after each line's write, p50 / p99, at each step.",
        "",
        *table(
            ["backend", "W + N", "capture read", "committed", "waiter poked", "waiter read done",
             "first write", "every write", "last write", "at the client", "client minus write",
             "socket writes / lines", "server CPU µs per event"],
            rows,
        ),
    ]  # fmt: skip
