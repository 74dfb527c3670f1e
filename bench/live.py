"""Trickle: one line every 10 ms, each carrying its send time; a follower in another process.

The follower's stdout is read by a thread here that timestamps each line on arrival;
visibility latency = arrival time - send time written in the line (same clock, same
machine). The first 10% of lines are dropped as warm-up (follower start-up).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import outspool_api, supervisor
from bench.common import Row, fresh_dir, producer, program
from bench.measure import Measured, Sample

START_DELAY = "0.3"  # seconds the trickle producer waits before its first line

# A live contender starts the capture and returns it with a function giving the follower argv.
Live = Callable[[Path, list[str]], tuple[Measured, Callable[[], list[str]]]]


class Arrivals(threading.Thread):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[tuple[float, bytes]] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line))


def _poller(kind: str, target: Path, stop: Path) -> Callable[[], list[str]]:
    return lambda: program("follow_poll.py", kind, str(target), str(stop))


def pyloop(work: Path, prod: list[str]) -> tuple[Measured, Callable[[], list[str]]]:
    cap = Measured(program("cap_pyloop.py", str(work / "loop"), "--", *prod))
    return cap, _poller("file", work / "loop.out", work / "stop")


def naive_wal(work: Path, prod: list[str]) -> tuple[Measured, Callable[[], list[str]]]:
    cap = Measured(program("cap_naive.py", str(work / "n.db"), "wal", "--", *prod))
    return cap, _poller("naive", work / "n.db", work / "stop")


def sketch(work: Path, prod: list[str]) -> tuple[Measured, Callable[[], list[str]]]:
    cap = Measured(program("sketch.py", str(work / "s.db"), "--", *prod))
    return cap, _poller("sketch", work / "s.db", work / "stop")


def supervisord(work: Path, prod: list[str]) -> tuple[Measured, Callable[[], list[str]]]:
    argv = supervisor.supervisord_argv(work, prod)
    cap = Measured(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cap, _poller("file", supervisor.outputs(work)[0], work / "stop")


def outspool(work: Path, prod: list[str]) -> tuple[Measured, Callable[[], list[str]]]:
    db, errfile = work / "o.db", work / "o.stderr"
    with errfile.open("wb") as err:
        cap = Measured(outspool_api.run_argv(db, prod), stderr=err)

    def follower() -> list[str]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            execution_id = outspool_api.parse_id(errfile.read_text(errors="replace"))
            if execution_id:
                return outspool_api.logs_argv(db, execution_id, "--follow", "--raw")
            time.sleep(0.005)
        raise RuntimeError("outspool run printed no execution id")

    return cap, follower


def run_one(name: str, live: Live, count: int) -> Row:
    work = fresh_dir(f"trickle-{name.split(maxsplit=1)[0]}")
    try:
        cap, follower_argv = live(work, producer("trickle", count, "0.010", START_DELAY))
        follower = subprocess.Popen(follower_argv(), stdout=subprocess.PIPE)
        arrivals = Arrivals(follower)
        arrivals.start()
        sample: Sample = cap.finish()
        (work / "stop").touch()
        try:
            follower.wait(timeout=15)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
        arrivals.join(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _row(name, sample, arrivals.lines, count)


def _row(name: str, sample: Sample, lines: list[tuple[float, bytes]], count: int) -> Row:
    sent: dict[int, float] = {}
    for arrived, line in lines:
        fields = line.split()
        if len(fields) == 3 and fields[2] == b"trickle":
            sent.setdefault(int(fields[0]), arrived - float(fields[1]))
    kept = sorted(lat for seq, lat in sent.items() if seq >= count // 10)
    row = Row(contender=name, runs=1, wall_s=sample.wall_s, cpu_s=sample.cpu_s)
    row.rss_mb = sample.rss_mb
    row.identical = len(sent) == count
    row.note = f"{len(sent)}/{count} lines seen by the follower"
    if kept:
        quantiles = statistics.quantiles(kept, n=100, method="inclusive")
        row.extra = {
            "p50_ms": statistics.median(kept) * 1000,
            "p99_ms": quantiles[98] * 1000,
            "max_ms": kept[-1] * 1000,
        }
    print(f"  [trickle] {name}: {row.extra} {row.note}", file=sys.stderr, flush=True)
    return row


CONTENDERS: list[tuple[str, Live]] = [
    ("Python 64 KiB loop + file poller (10 ms)", pyloop),
    ("naive per-line INSERT, WAL + poller (10 ms)", naive_wal),
    ("design sketch + poller (10 ms)", sketch),
    ("supervisord + log file poller (10 ms)", supervisord),
    ("outspool run + outspool logs --follow", outspool),
]
