"""What every scenario shares: paths, the expected output of a producer, one run's outcome."""

from __future__ import annotations

import hashlib
import shutil
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import produce
from bench.measure import Sample

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
PYTHON = sys.executable
MIB = 1024 * 1024


def producer(kind: str, count: int, *extra: str) -> list[str]:
    return [PYTHON, str(BENCH / "produce.py"), kind, str(count), *extra]


def program(name: str, *args: str) -> list[str]:
    return [PYTHON, str(BENCH / name), *args]


def fresh_dir(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sha256_of(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Expected:
    """Digests of what a producer writes: each stream, and both merged in write order."""

    kind: str
    count: int
    stdout: str
    stderr: str
    merged: str
    nbytes: int
    lines: int

    @classmethod
    def of(cls, kind: str, count: int) -> Expected:
        out, err, merged = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        nbytes = lines = 0
        for fd, data in produce.chunks(kind, count):
            (out if fd == produce.STDOUT else err).update(data)
            merged.update(data)
            nbytes += len(data)
            lines += data.count(b"\n")
        return cls(kind, count, out.hexdigest(), err.hexdigest(), merged.hexdigest(), nbytes, lines)


@dataclass
class Outcome:
    """One run of one contender in one scenario."""

    sample: Sample
    nbytes: int
    identical: bool | None = None
    order: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """The median of several runs of one contender, as reported."""

    contender: str
    runs: int
    wall_s: float | None = None
    mb_s: float | None = None
    vs_cat: float | None = None
    vs_pyloop: float | None = None
    cpu_s: float | None = None
    rss_mb: float | None = None
    disk_per_byte: float | None = None
    identical: bool | None = None
    order: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(name: str, outcomes: list[Outcome]) -> Row:
    """Median of each figure over the runs; identical only if every run was."""
    samples = [o.sample for o in outcomes]
    walls = [s.wall_s for s in samples]
    rates = [
        o.nbytes / s.wall_s / 1e6 if s.wall_s > 0 else None
        for o, s in zip(outcomes, samples, strict=True)
    ]
    disks = [
        s.disk_bytes / o.nbytes if s.disk_bytes is not None and o.nbytes else None
        for o, s in zip(outcomes, samples, strict=True)
    ]
    ids = [o.identical for o in outcomes]
    identical = None if all(i is None for i in ids) else all(i is True for i in ids)
    notes = sorted({o.note for o in outcomes if o.note})
    extra: dict[str, Any] = {}
    for o in outcomes:
        extra.update(o.extra)
    return Row(
        contender=name,
        runs=len(outcomes),
        wall_s=_median(list(walls)),
        mb_s=_median(rates),
        cpu_s=_median([s.cpu_s for s in samples]),
        rss_mb=_median([s.rss_mb for s in samples]),
        disk_per_byte=_median(disks),
        identical=identical,
        order=outcomes[-1].order,
        note="; ".join(notes),
        extra=extra,
    )


def add_ratios(rows: list[Row]) -> None:
    """Time per output byte relative to ``| cat > file`` and to the Python loop, same run."""
    refs = {r.contender: r.mb_s for r in rows}
    for row in rows:
        if row.mb_s:
            cat, loop = refs.get("producer | cat > file"), refs.get("Python 64 KiB loop")
            row.vs_cat = cat / row.mb_s if cat else None
            row.vs_pyloop = loop / row.mb_s if loop else None
