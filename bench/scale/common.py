"""What the scale scenarios share: PostgreSQL schemas, percentiles, /proc sampling, tables."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, RESULTS
from bench.measure import stat_cpu

#: The PostgreSQL server the benchmarks use (each scenario in a schema of its own).
DSN = os.environ.get("OUTSPOOL_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
OUTSPOOL = str(Path(PYTHON).parent / "outspool")


@dataclass
class Section:
    """One scenario's report: markdown lines, figures for the JSON, plots written."""

    key: str
    title: str
    body: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def pg_unavailable() -> str | None:
    """Why PostgreSQL cannot be measured here, or None."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg not installed ({exc})"
    try:
        psycopg.connect(DSN, autocommit=True, connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"no PostgreSQL at {DSN} ({str(exc).strip().splitlines()[0]})"
    return None


@contextlib.contextmanager
def pg_schema(prefix: str) -> Iterator[str]:
    """A store URL in a fresh schema, dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{DSN}{'&' if '?' in DSN else '?'}schema={schema}"
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def backends(work: Path, prefix: str) -> Iterator[tuple[str, str | None, str]]:
    """(backend, store URL or None, why not) for SQLite then PostgreSQL; PG schema dropped."""
    yield "sqlite", str(work / f"{prefix}.db"), ""
    missing = pg_unavailable()
    if missing:
        yield "postgres", None, missing
        return
    with pg_schema(prefix) as url:
        yield "postgres", url, ""


def ms(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of durations in seconds, in milliseconds."""
    if not values:
        return {}
    ordered = sorted(values)
    p99 = ordered[0] if len(ordered) == 1 else statistics.quantiles(ordered, n=100)[98]
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": min(p99, ordered[-1]) * 1000,
        "max_ms": ordered[-1] * 1000,
        "n": len(ordered),
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


@dataclass
class Usage:
    """What a process used while watched: peaks, and CPU seconds over the window."""

    rss_mb: float = 0.0
    threads: int = 0
    fds: int = 0
    cpu_s: float = 0.0


def _status_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    return stat_cpu(Path(f"/proc/{pid}/stat")) or 0.0


class Watch(threading.Thread):
    """Samples a process's RSS, threads and open files every ``interval`` until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.usage = Usage()
        self._done = threading.Event()
        self._cpu0 = cpu_seconds(pid)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return
        u = self.usage
        u.rss_mb = max(u.rss_mb, _status_field(status, "VmRSS:") / 1024)
        u.threads = max(u.threads, _status_field(status, "Threads:"))
        u.fds = max(u.fds, fds)
        u.cpu_s = cpu_seconds(self.pid) - self._cpu0

    def stop(self) -> Usage:
        self._sample()
        self._done.set()
        self.join()
        return self.usage


def ticker(interval: float, count: int, delay: float = 0.0) -> list[str]:
    """A tiny program (perl, ~2 MB) printing ``SEQ SEND_TIME tick`` every ``interval`` s."""
    script = (
        "$|=1; sleep($ARGV[2]);"
        ' for my $i (1..$ARGV[1]) { printf("%d %.6f tick\\n", $i, time); sleep($ARGV[0]) }'
    )
    return ["perl", "-MTime::HiRes=time,sleep", "-e", script, str(interval), str(count), str(delay)]


def latencies(data: bytes, arrived: float, into: list[float], skip: int = 0) -> None:
    """Append ``arrived - send time`` for every ``SEQ TIME tick`` line in ``data``."""
    for line in data.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == b"tick" and int(fields[0]) > skip:
            into.append(arrived - float(fields[1]))


def wait_for_line(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """Read ``proc``'s stdout until a line containing ``needle``; that line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if needle in line:
            return line
    raise RuntimeError(f"no {needle!r} line from {proc.args!r}")


def plot_path(mode: str, key: str) -> Path:
    return RESULTS / f"{mode}-{key}.png"
