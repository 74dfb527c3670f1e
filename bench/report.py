"""Turn the rows into bench/results/<mode>.md and .json, goals of issue 5 first."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import Row
from bench.scale.common import Section

OUTSPOOL = "outspool run"
OUTSPOOL_LIB = "outspool (library, one process)"
#: The contender of the one row a scenario that raised is recorded as (its note says why).
FAILED = "FAILED"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        supervisor = metadata.version("supervisor")
    except metadata.PackageNotFoundError:
        supervisor = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "supervisor": supervisor,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def _f(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: "-"}[value]


def _find(results: dict[str, list[Row]], scenario: str, contender: str) -> Row | None:
    for row in results.get(scenario, []):
        if row.contender == contender:
            return row
    return None


def _verdict(value: float | None, goal: float, below: bool) -> str:
    if value is None:
        return "NOT MEASURED"
    met = value <= goal if below else value >= goal
    return "met" if met else "**NOT MET**"


def goals(results: dict[str, list[Row]], bulk_big: str) -> list[tuple[str, str, str, str]]:
    """(figure, goal, measured, verdict) for each line of issue 5's table."""

    def get(scenario: str, attr: str) -> float | None:
        row = _find(results, scenario, OUTSPOOL_LIB if scenario.startswith("fanin") else OUTSPOOL)
        if row is None:
            return None
        value = row.extra.get(attr) if attr in row.extra else getattr(row, attr, None)
        return value if isinstance(value, int | float) else None

    big = bulk_big.removeprefix("bulk-")
    out = []
    for label, scenario, attr, goal, below, unit in [
        (f"{big} bulk, time ÷ `cat > file`", bulk_big, "vs_cat", 2.0, True, ""),
        ("flushed log lines, time ÷ `cat > file`", "lines", "vs_cat", 1.3, True, ""),
        ("stderr-heavy, time ÷ `cat > file`", "stderr", "vs_cat", 2.5, True, ""),
        ("trickle visibility p99", "trickle", "p99_ms", 50.0, True, " ms"),
        (f"peak RSS capturing {big} bulk", bulk_big, "rss_mb", 64.0, True, " MB"),
        ("disk bytes written per output byte, log text", "lines", "disk_per_byte", 1.0, True, ""),
        ("4 processes on one file: reader p99", "shared-4", "reader_p99_ms", 5.0, True, " ms"),
        ("4 processes on one file: errors", "shared-4", "reader_errors", 0.0, True, ""),
        (
            "16 concurrent programs in one process",
            "fanin-16",
            "lines_per_s",
            600_000,
            False,
            " lines/s",
        ),
    ]:
        value = get(scenario, attr)
        sign = "≤" if below else "≥"
        measured = "-" if value is None else f"{_f(value)}{unit}"
        out.append((label, f"{sign} {_f(goal)}{unit}", measured, _verdict(value, goal, below)))
    checked = [
        row.identical
        for rows in results.values()
        for row in rows
        if row.contender in (OUTSPOOL, OUTSPOOL_LIB)
    ]
    if checked and all(checked):
        verdict = "met"
    else:
        verdict = "NOT MEASURED" if not checked else "**NOT MET**"
    out.append(
        (
            "byte-identical in every scenario",
            "yes",
            f"{sum(map(bool, checked))}/{len(checked)}",
            verdict,
        )
    )
    return out


STREAM_HEAD = (
    "| contender | runs | wall s | MB/s | ÷ cat > file | ÷ Py loop | CPU s | peak RSS MB"
    " | disk B per B | identical | order | notes |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def stream_table(rows: list[Row]) -> str:
    lines = [STREAM_HEAD]
    for r in rows:
        lines.append(
            f"| {r.contender} | {r.runs} | {_f(r.wall_s)} | {_f(r.mb_s, 1)} | {_f(r.vs_cat)}"
            f" | {_f(r.vs_pyloop)} | {_f(r.cpu_s)} | {_f(r.rss_mb, 1)} | {_f(r.disk_per_byte)}"
            f" | {_yes(r.identical)} | {r.order or '-'} | {r.note} |"
        )
    return "\n".join(lines)


def trickle_table(rows: list[Row]) -> str:
    lines = [
        "| contender | p50 ms | p99 ms | max ms | CPU s | peak RSS MB | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.extra
        lines.append(
            f"| {r.contender} | {_f(e.get('p50_ms'), 1)} | {_f(e.get('p99_ms'), 1)}"
            f" | {_f(e.get('max_ms'), 1)} | {_f(r.cpu_s)} | {_f(r.rss_mb, 1)} | {r.note} |"
        )
    return "\n".join(lines)


def fanin_table(rows: list[Row]) -> str:
    lines = [
        "| contender | wall s | lines/s | MB/s | CPU s | peak RSS MB | disk B per B | identical"
        " | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.contender} | {_f(r.wall_s)} | {_f(r.extra.get('lines_per_s'))} | {_f(r.mb_s, 1)}"
            f" | {_f(r.cpu_s)} | {_f(r.rss_mb, 1)} | {_f(r.disk_per_byte)} | {_yes(r.identical)}"
            f" | {r.note} |"
        )
    return "\n".join(lines)


def shared_table(rows: list[Row]) -> str:
    lines = [
        "| contender | wall s | MB/s (all 4) | reader p50 ms | p99 ms | max ms | queries"
        " | reader errors | capturer failures | identical | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.extra
        lines.append(
            f"| {r.contender} | {_f(r.wall_s)} | {_f(r.mb_s, 1)} | {_f(e.get('reader_p50_ms'))}"
            f" | {_f(e.get('reader_p99_ms'))} | {_f(e.get('reader_max_ms'))}"
            f" | {e.get('reader_queries', '-')} | {e.get('reader_errors', '-')}"
            f" | {e.get('capturer_failures', '-')} | {_yes(r.identical)} | {r.note} |"
        )
    return "\n".join(lines)


def table_for(scenario: str, rows: list[Row]) -> str:
    if scenario == "sandbox":
        from bench.sandbox import table

        return table(rows)
    if scenario == "trickle":
        return trickle_table(rows)
    if scenario.startswith("fanin"):
        return fanin_table(rows)
    if scenario.startswith("shared"):
        return shared_table(rows)
    return stream_table(rows)


def write(
    mode: str,
    *,
    results: dict[str, list[Row]],
    titles: dict[str, str],
    bulk_big: str,
    notes: list[str],
    sections: list[Section],
    elapsed: float,
    out_dir: Path | None,
    timings: dict[str, float] | None = None,
    finished: bool = True,
) -> str:
    """The report as markdown (also written to ``out_dir`` with its JSON). ``timings``:
    seconds each scenario took; ``finished`` False while the suite is still running."""
    info = machine()
    took = (
        f"Suite took {elapsed:.0f} s"
        if finished
        else f"**Partial results**: the suite was still running after {elapsed:.0f} s"
    )
    parts = [
        f"# outspool benchmarks: {mode}",
        "",
        f"{info['date']}; {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB RAM,"
        f" Linux {info['kernel']}; Python {info['python']}, SQLite {info['sqlite']},"
        f" supervisor {info['supervisor']}. {took}"
        f" (`python -m bench --{mode.replace('-', ' --')}`).",
        "",
        *notes,
    ]
    if results:
        parts += [
            "",
            "## Goals of issue 5 (outspool's row)",
            "",
            "| figure | goal | measured | verdict |",
            "|---|---|---|---|",
            *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in goals(results, bulk_big)),
        ]
    for scenario, rows in results.items():
        failed = [r.note for r in rows if r.contender == FAILED]
        body = failed[0] if failed else table_for(scenario, rows)
        parts += ["", f"## {titles[scenario]}", "", body]
    for section in sections:
        parts += ["", f"## {section.title}", "", *section.body]
        parts += [f"![{section.key}]({name})" for name in section.plots]
    if timings:
        parts += ["", "## Time per scenario", "", "| scenario | s |", "|---|---|"]
        parts += [f"| {key} | {took_s:.0f} |" for key, took_s in timings.items()]
    text = "\n".join(parts) + "\n"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{mode}.md").write_text(text)
        payload = {
            "mode": mode,
            "machine": info,
            "elapsed_s": elapsed,
            "finished": finished,
            "timings_s": timings or {},
            "goals": goals(results, bulk_big) if results else [],
            "scenarios": {
                k: {"title": titles[k], "rows": [asdict(r) for r in v]} for k, v in results.items()
            },
            "sections": {s.key: {"title": s.title, **s.data} for s in sections},
        }
        (out_dir / f"{mode}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return text
