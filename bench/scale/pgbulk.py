"""PostgreSQL pace: the same bulk capture into SQLite and into PostgreSQL, interleaved.

``outspool run --quiet -- produce.py bulk N`` (64 KiB writes of base64-like text) into a
fresh SQLite file and a fresh PostgreSQL schema, round by round; wall time and the
capturing process's CPU (the server's work is not in its CPU, it is in the wall).
The first round of each checks the stored bytes against the producer's.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench import outspool_api
from bench.common import MIB, Expected, fresh_dir, producer
from bench.measure import Measured
from bench.scale import plots
from bench.scale.common import Section, log, pg_schema, pg_unavailable, plot_path, table


def run(full: bool) -> Section:
    sizes = (256 * MIB, 1024 * MIB) if full else (8 * MIB, 32 * MIB)
    runs = 3 if full else 1
    mode = "full" if full else "quick"
    missing = pg_unavailable()
    section = Section("pgbulk", f"PostgreSQL pace: bulk capture, {runs} run(s) each, median")
    if missing:
        section.body.append(f"- **NOT RUN**: {missing}")
        return section
    work = fresh_dir("pgbulk")
    results: dict[int, dict[str, Any]] = {}
    try:
        for size in sizes:
            results[size] = _size(work, size, runs)
            log(f"[pgbulk] {size // MIB} MiB: {results[size]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section.data = {str(k): v for k, v in results.items()}
    rows = [
        [f"{size // MIB} MiB", r["sqlite"]["wall_s"], r["postgres"]["wall_s"], r["ratio"],
         r["sqlite"]["cpu_s"], r["postgres"]["cpu_s"], r["identical"],
         "met" if r["ratio"] <= 1.3 else "**NOT MET**"]
        for size, r in results.items()
    ]  # fmt: skip
    section.body += table(
        ["size", "SQLite s", "PostgreSQL s", "PG ÷ SQLite", "SQLite CPU s", "PG CPU s",
         "identical", "<= 1.3x"],
        rows,
    )  # fmt: skip
    name = plots.lines(
        plot_path(mode, "pgbulk"),
        "bulk capture time by backend",
        "MiB captured",
        "seconds",
        {
            b: [(s / MIB, r[b]["wall_s"]) for s, r in results.items()]
            for b in ("sqlite", "postgres")
        },
    )
    if name:
        section.plots.append(name)
    return section


def _size(work: Path, size: int, runs: int) -> dict[str, Any]:
    samples: dict[str, list[Any]] = {"sqlite": [], "postgres": []}
    identical = True
    expected = Expected.of("bulk", size)
    for k in range(runs):
        for backend, got in samples.items():
            if backend == "sqlite":
                db = work / f"b{k}.db"
                sample, same = _capture(str(db), size, expected, check=k == 0)
                db.unlink(missing_ok=True)
                shutil.rmtree(work / f"b{k}.db-chunks", ignore_errors=True)
            else:
                with pg_schema("bulk") as url:
                    sample, same = _capture(url, size, expected, check=k == 0)
            identical = identical and same is not False
            got.append(sample)
    out: dict[str, Any] = {
        b: {
            "wall_s": statistics.median(s.wall_s for s in ss),
            "cpu_s": statistics.median(s.cpu_s or 0.0 for s in ss),
        }
        for b, ss in samples.items()
    }
    out["ratio"] = out["postgres"]["wall_s"] / out["sqlite"]["wall_s"]
    out["identical"] = "yes" if identical else "**NO**"
    return out


def _capture(url: str, size: int, expected: Expected, check: bool) -> tuple[Any, bool | None]:
    argv = outspool_api.run_argv(url, producer("bulk", size))
    cap = Measured(argv, stderr=subprocess.PIPE)
    sample = cap.finish()
    assert cap.proc.stderr is not None
    execution_id = outspool_api.parse_id(cap.proc.stderr.read().decode(errors="replace"))
    if not check or execution_id is None:
        return sample, None if execution_id else False
    got = outspool_api.stream_digest(url, execution_id, "stdout")
    return sample, got == expected.stdout
