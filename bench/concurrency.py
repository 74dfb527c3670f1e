"""Fan-in: N programs captured by one process; and 4 capturing processes on one database
file while a reader asks for the last 100 lines every 10 ms."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import outspool_api, sketch
from bench.common import Expected, Row, fresh_dir, producer, program, sha256_file, sha256_of
from bench.measure import Measured, Sample, run_measured

SHARED_DELAY = 1.0  # producers wait this long, so the reader is running before output starts
FANIN_TODO = "TODO: not measured, the library lacks what bench/outspool_api.py uses"


def _rate_row(name: str, sample: Sample, lines: int, nbytes: int, same: bool | None) -> Row:
    row = Row(contender=name, runs=1, wall_s=sample.wall_s, cpu_s=sample.cpu_s)
    row.rss_mb, row.identical = sample.rss_mb, same
    row.mb_s = nbytes / sample.wall_s / 1e6
    if sample.disk_bytes is not None:
        row.disk_per_byte = sample.disk_bytes / nbytes
    row.extra = {"lines_per_s": lines / sample.wall_s}
    if sample.exit_code != 0:
        row.note = f"exit code {sample.exit_code}"
    print(f"  {name}: {row.extra['lines_per_s']:,.0f} lines/s", file=sys.stderr, flush=True)
    return row


def fanin(n: int, per_program: int) -> list[Row]:
    exp = Expected.of("lines", per_program)
    prod = producer("lines", per_program)
    lines, nbytes = n * exp.lines, n * exp.nbytes
    rows = []
    work = fresh_dir(f"fanin-{n}")
    try:
        sample = run_measured(program("fanin.py", "pyloop", str(work), str(n), "--", *prod))
        same = all(sha256_file(work / f"{k + 1}.out") == exp.stdout for k in range(n))
        rows.append(_rate_row("Python 64 KiB loop (selectors)", sample, lines, nbytes, same))
        shutil.rmtree(work)
        work.mkdir()
        db = work / "s.db"
        sample = run_measured(program("fanin.py", "sketch", str(db), str(n), "--", *prod))
        conn = sqlite3.connect(db)
        same = all(
            sha256_of([sketch.read_stream(conn, str(k + 1), "stdout")]) == exp.stdout
            for k in range(n)
        )
        conn.close()
        rows.append(
            _rate_row("design sketch (asyncio, one connection)", sample, lines, nbytes, same)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows.append(_outspool_fanin(n, prod, exp))
    return rows


def _outspool_fanin(n: int, prod: list[str], exp: Expected) -> Row:
    name = "outspool (library, one process)"  # report.OUTSPOOL_LIB
    missing = outspool_api.library_missing()
    if missing:
        return Row(contender=name, runs=0, note=f"{FANIN_TODO}: {missing}")
    work = fresh_dir(f"fanin-{n}-outspool")
    db = work / "o.db"
    try:
        with (work / "ids").open("wb") as ids_out:
            sample = run_measured(
                program("fanin.py", "outspool", str(db), str(n), "--", *prod), stdout=ids_out
            )
        ids = (work / "ids").read_text().split()
        digests = outspool_api.library_digests(db, ids, "stdout")
        same = len(ids) == n and all(d == exp.stdout for d in digests)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = _rate_row(name, sample, n * exp.lines, n * exp.nbytes, same)
    row.note = (
        row.note + "; " if row.note else ""
    ) + "Outspool(db).start() x N, then wait(); read back with Outspool.iter_output"
    return row


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "reader_p50_ms": statistics.median(latencies) * 1000,
        "reader_p99_ms": q[98] * 1000,
        "reader_max_ms": max(latencies) * 1000,
        "reader_queries": len(latencies),
    }


def _start(kind: str, work: Path, k: int, prod: list[str]) -> Measured:
    env = dict(os.environ, BENCH_EXECUTION_ID=str(k))
    if kind == "sketch":
        return Measured(program("sketch.py", str(work / "one.db"), "--", *prod), env=env)
    if kind == "naive":
        return Measured(program("cap_naive.py", str(work / "one.db"), "wal", "--", *prod), env=env)
    with (work / f"o{k}.stderr").open("wb") as err:
        return Measured(outspool_api.run_argv(work / "one.db", prod), stderr=err)


def _ids(kind: str, work: Path, count: int) -> list[str]:
    if kind != "outspool":
        return [str(k) for k in range(1, count + 1)]
    ids = []
    for k in range(1, count + 1):
        execution_id = None
        for _ in range(2000):
            execution_id = outspool_api.parse_id(
                (work / f"o{k}.stderr").read_text(errors="replace")
            )
            if execution_id:
                break
            time.sleep(0.005)
        if execution_id is None:
            raise RuntimeError("outspool run printed no execution id")
        ids.append(execution_id)
    return ids


def shared_file(name: str, kind: str, processes: int, per_process: int) -> Row:
    """``processes`` capturers of ``lines per_process`` each into one file, plus the reader."""
    work = fresh_dir(f"shared-{kind}")
    prod = producer("lines", per_process, str(SHARED_DELAY))
    exp = Expected.of("lines", per_process)
    try:
        caps = [_start(kind, work, k, prod) for k in range(1, processes + 1)]
        ids = _ids(kind, work, processes)
        stop = work / "stop"
        reader = subprocess.Popen(
            program("reader.py", kind, str(work / "one.db"), str(stop), *ids),
            stdout=subprocess.PIPE,
        )
        samples = [cap.finish() for cap in caps]
        stop.touch()
        report = json.loads(reader.communicate(timeout=120)[0] or b"{}")
        same = _shared_identical(kind, work, ids, exp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = max(s.wall_s for s in samples) - SHARED_DELAY
    row = Row(contender=name, runs=1, wall_s=wall, identical=same)
    row.mb_s = processes * exp.nbytes / wall / 1e6
    row.cpu_s = sum(s.cpu_s or 0 for s in samples)
    row.rss_mb = max((s.rss_mb or 0) for s in samples)
    failed = sum(s.exit_code != 0 for s in samples)
    row.extra = _percentiles(report.get("latencies", []))
    row.extra["reader_errors"] = sum(report.get("errors", {}).values())
    row.extra["capturer_failures"] = failed
    row.note = "; ".join(f"{count}x {msg[:80]}" for msg, count in report.get("errors", {}).items())
    if kind == "outspool":
        row.note = (row.note + "; " if row.note else "") + "reader: Outspool(db).tail(id, 100)"
    print(f"  [shared] {name}: {row.extra}", file=sys.stderr, flush=True)
    return row


def _shared_identical(kind: str, work: Path, ids: list[str], exp: Expected) -> bool:
    db = work / "one.db"
    if kind == "outspool":
        return all(outspool_api.stream_digest(db, i, "stdout") == exp.stdout for i in ids)
    conn = sqlite3.connect(db)
    try:
        if kind == "sketch":
            return all(
                sha256_of([sketch.read_stream(conn, i, "stdout")]) == exp.stdout for i in ids
            )
        return all(
            sha256_of(
                r[0]
                for r in conn.execute(
                    "SELECT data FROM output_lines WHERE execution_id = ? AND stream = 'stdout'"
                    " ORDER BY id",
                    (int(i),),
                )
            )
            == exp.stdout
            for i in ids
        )
    finally:
        conn.close()
