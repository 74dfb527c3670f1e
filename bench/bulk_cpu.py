"""Where a bulk capture's CPU goes, by thread, beside ``producer | cat > file``; alternating.

``python -m bench.bulk_cpu [--mib 1024] [--rounds 3] [--src DIR ...]`` runs, round by
round, ``produce.py bulk`` into ``cat > file`` and into ``outspool run`` (the CLI, SQLite,
no output limit), once per ``--src`` (a source tree put first on ``PYTHONPATH``, e.g.
``git archive <commit> src | tar -x -C DIR`` for a before/after comparison; none: the
installed code). For each run it prints the wall time, the capturing process's CPU
(without the producer's), each of its threads' CPU (sampled from ``/proc/PID/task``
every 20 ms until it exits: the main thread, then the others busiest first; in a bulk
capture the busiest is the writer, then the capture loop, the checkpointer), its minor
page faults and peak RSS. The busiest thread's CPU bounds the capture's pace on an idle
machine, and the threads' total against ``cat``'s says what it costs beyond the copy
``cat`` makes; both survive a loaded machine far better than wall time does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from bench.common import MIB, PYTHON, fresh_dir, producer
from bench.measure import stat_cpu

OUTSPOOL_MAIN = "import sys; from outspool.cli import main; sys.argv[0] = 'outspool'; main()"


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _minflt(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[7])


def run_one(
    argv: list[str], env: dict[str, str], out: Path | None, stdin: IO[Any] | None = None
) -> dict[str, Any]:
    """Run ``argv`` (stdout to ``out``), sampling its threads until it exits; reap it."""
    started = time.monotonic()
    with open(out or os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=sink, stderr=subprocess.DEVNULL)
    threads: dict[int, float] = {}
    peak = 0
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            cpu = stat_cpu(task / "stat")
            if cpu is not None:
                threads[int(task.name)] = cpu
        peak = max(peak, _status_kib(proc.pid, "VmHWM:"))
        time.sleep(0.02)
    wall = time.monotonic() - started
    cpu = stat_cpu(Path(f"/proc/{proc.pid}/stat")) or 0.0
    faults = _minflt(proc.pid)
    _, status, _ = os.wait4(proc.pid, 0)
    main = threads.pop(proc.pid, 0.0)
    return {
        "wall": wall,
        "cpu": cpu,
        "main": main,
        "threads": sorted(threads.values(), reverse=True),
        "faults": faults,
        "rss_mb": peak / 1024,
        "exit": os.waitstatus_to_exitcode(status),
    }


def _line(name: str, r: dict[str, Any]) -> str:
    threads = " ".join(f"{t:.2f}" for t in r["threads"])
    return (
        f"{name:<24} wall {r['wall']:6.2f} s  cpu {r['cpu']:5.2f} s  main {r['main']:4.2f}  "
        f"threads [{threads}]  faults {r['faults']:>7}  rss {r['rss_mb']:3.0f} MB  "
        f"exit {r['exit']}  load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_cpu", description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", action="append", default=[], help="a source tree to compare")
    args = parser.parse_args()
    produce = producer("bulk", args.mib * MIB)
    contenders = [("cat > file", None)] + [(src, src) for src in args.src or ["installed"]]
    for _ in range(args.rounds):
        for name, src in contenders:
            work = fresh_dir("bulk_cpu")
            env = dict(os.environ, OUTSPOOL_MAX_OUTPUT="0")
            if src is None:
                feed = subprocess.Popen(produce, stdout=subprocess.PIPE)
                assert feed.stdout is not None
                result = run_one(["cat"], env, work / "out", feed.stdout)
                feed.stdout.close()
                feed.wait()
            else:
                if src != "installed":
                    env["PYTHONPATH"] = src
                db = str(work / "o.db")
                argv = [PYTHON, "-c", OUTSPOOL_MAIN, "run", "--db", db, "--quiet", "--"]
                result = run_one([*argv, *produce], env, None)
            print(_line(name, result), flush=True)


if __name__ == "__main__":
    main()
