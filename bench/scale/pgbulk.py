"""PostgreSQL pace: the same bulk capture into SQLite and into PostgreSQL, interleaved.

``outspool run --quiet -- produce.py bulk N`` (64 KiB writes of base64-like text) into a
fresh SQLite file and a fresh PostgreSQL schema, round by round; wall time and the
capturing process's CPU. The server's work is not in that CPU, so for PostgreSQL the
server's share is measured too (we run on the server's machine and read its /proc):

  * the CPU of the backends serving the capture: its connections carry an
    ``application_name`` of their own, their PIDs are found in ``pg_stat_activity`` and
    their ``utime + stime`` sampled every 10 ms until they exit (so up to 10 ms of a
    backend's last work can be missed);
  * the CPU of the server's background processes (WAL writer, checkpointer, background
    writer) from the capture's start to its end: shared with anything else using the
    server meanwhile, so read it as an upper bound;
  * the WAL the server wrote meanwhile (``pg_current_wal_lsn()`` before and after; same
    caveat), per byte captured.

CPU figures survive a loaded machine; wall ratios do not. The first round of each
backend checks the stored bytes against the producer's.

One command: ``python -m bench.scale.pgbulk [--mib 1024] [--runs 3]`` (or, within the
suite, ``python -m bench --full --only pgbulk``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import outspool_api
from bench.common import MIB, Expected, fresh_dir, producer
from bench.measure import Measured
from bench.scale import plots
from bench.scale.common import (
    DSN,
    Section,
    cpu_seconds,
    fmt,
    log,
    pg_schema,
    pg_unavailable,
    plot_path,
    table,
)

#: The server's background processes whose CPU a bulk write drives.
AUX = ("walwriter", "checkpointer", "background writer")


class ServerCpu(threading.Thread):
    """The PostgreSQL server's CPU on behalf of connections named ``app`` (see above)."""

    def __init__(self, app: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.app = app
        self._conn = psycopg.connect(DSN, autocommit=True)
        self._done = threading.Event()
        self._last: dict[int, float] = {}  # backend pid -> its CPU when last seen
        aux = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = ANY(%s)", [list(AUX)]
        ).fetchall()
        self._aux = {int(pid): cpu_seconds(int(pid)) for (pid,) in aux}
        self._lsn0 = self._lsn()
        self.backend_s = self.aux_s = 0.0
        self.wal_bytes = 0

    def _lsn(self) -> int:
        row = self._conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return int(row[0]) if row else 0

    def run(self) -> None:
        found_at = 0.0
        while not self._done.wait(0.01):
            now = time.monotonic()
            if now - found_at > 0.2:  # the pool may open connections later
                found_at = now
                rows = self._conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [self.app]
                ).fetchall()
                for (pid,) in rows:
                    self._last.setdefault(int(pid), 0.0)
            for pid in self._last:
                cpu = cpu_seconds(pid)  # 0.0 once it exited: keep the last reading
                if cpu:
                    self._last[pid] = cpu

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.backend_s = sum(self._last.values())
        self.aux_s = sum(cpu_seconds(pid) - cpu0 for pid, cpu0 in self._aux.items())
        self.wal_bytes = self._lsn() - self._lsn0
        self._conn.close()


def run(full: bool) -> Section:
    sizes = (256 * MIB, 1024 * MIB) if full else (8 * MIB, 32 * MIB)
    return measure(sizes, 3 if full else 1, "full" if full else "quick")


def measure(sizes: tuple[int, ...], runs: int, mode: str) -> Section:
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
        [f"{size // MIB} MiB", r["sqlite"]["wall_s"], r["postgres"]["wall_s"],
         *(fmt(v, 2) for v in (r["ratio"], r["sqlite"]["cpu_s"], r["postgres"]["cpu_s"],
                               r["postgres"]["server_s"], r["postgres"]["aux_s"],
                               r["cpu_ratio"], r["postgres"]["wal_per_byte"])),
         r["identical"], "met" if r["ratio"] <= 1.3 else "**NOT MET**"]
        for size, r in results.items()
    ]  # fmt: skip
    section.body += table(
        ["size", "SQLite s", "PostgreSQL s", "PG ÷ SQLite", "SQLite CPU s", "PG capture CPU s",
         "PG backend CPU s", "PG bg CPU s", "CPU PG ÷ SQLite", "WAL B/B", "identical",
         "<= 1.3x"],
        rows,
    )  # fmt: skip
    section.body.append(
        "- CPU PG ÷ SQLite: (capture + backend + background) ÷ SQLite capture; "
        "background CPU and WAL are shared with anything else using the server"
    )
    if mode not in ("full", "quick"):
        return section
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
    samples: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
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
        b: {key: statistics.median(s[key] for s in ss) for key in ss[0]}
        for b, ss in samples.items()
    }
    out["ratio"] = out["postgres"]["wall_s"] / out["sqlite"]["wall_s"]
    pg = out["postgres"]
    out["cpu_ratio"] = (pg["cpu_s"] + pg["server_s"] + pg["aux_s"]) / out["sqlite"]["cpu_s"]
    out["identical"] = "yes" if identical else "**NO**"
    return out


def _capture(
    url: str, size: int, expected: Expected, check: bool
) -> tuple[dict[str, float], bool | None]:
    server: ServerCpu | None = None
    if url.startswith("postgresql:"):
        app = f"pgbulk-{uuid.uuid4().hex[:8]}"
        url = f"{url}&application_name={app}"
        server = ServerCpu(app)
        server.start()
    argv = outspool_api.run_argv(url, producer("bulk", size))
    cap = Measured(argv, stderr=subprocess.PIPE)
    sample = cap.finish()
    got: dict[str, float] = {"wall_s": sample.wall_s, "cpu_s": sample.cpu_s or 0.0}
    if server is not None:
        server.stop()
        got |= {
            "server_s": server.backend_s,
            "aux_s": server.aux_s,
            "wal_per_byte": server.wal_bytes / size,
        }
    assert cap.proc.stderr is not None
    execution_id = outspool_api.parse_id(cap.proc.stderr.read().decode(errors="replace"))
    if not check or execution_id is None:
        return got, None if execution_id else False
    digest = outspool_api.stream_digest(url, execution_id, "stdout")
    return got, digest == expected.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[1024], help="sizes in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    section = measure(tuple(m * MIB for m in args.mib), args.runs, "adhoc")  # no plot
    print("\n".join([f"## {section.title}", *section.body]))


if __name__ == "__main__":
    main()
