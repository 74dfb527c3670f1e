"""The throughput scenarios: bulk, log lines, mixed, stderr-heavy.

Every contender runs in the same invocation, interleaved round by round so that a noisy
moment of the machine hits them all alike.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass

from bench import contenders as c
from bench.common import Expected, Outcome, Row, add_ratios, fresh_dir, summarize

SLOW_S = 15.0  # a contender slower than this on its first run is not repeated


@dataclass(frozen=True)
class Entry:
    """A contender in a scenario; ``count`` overrides the scenario's size (naive, capped)."""

    name: str
    run: c.Contender
    count: int | None = None
    runs: int | None = None


def references() -> list[Entry]:
    return [
        Entry("producer > /dev/null", c.devnull),
        Entry("producer > file", c.to_file),
        Entry("producer | cat > file", c.cat_to_file),
        Entry("Python 64 KiB loop", c.pyloop),
    ]


def run_scenario(
    name: str, kind: str, count: int, *, entries: list[Entry], runs: int, skip: dict[str, str]
) -> list[Row]:
    expected: dict[int, Expected] = {}
    outcomes: dict[str, list[Outcome]] = {e.name: [] for e in entries}
    for round_no in range(runs):
        for entry in entries:
            done = outcomes[entry.name]
            if entry.name in skip or len(done) >= (entry.runs or runs):
                continue
            if done and done[0].sample.wall_s > SLOW_S:
                continue
            size = entry.count or count
            exp = expected.setdefault(size, Expected.of(kind, size))
            work = fresh_dir(f"{name}-{len(done)}")
            try:
                outcome = entry.run(work, kind, size, exp)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            done.append(outcome)
            print(
                f"  [{name}] round {round_no + 1} {entry.name}: {outcome.sample.wall_s:.2f} s"
                f" identical={outcome.identical}",
                file=sys.stderr,
                flush=True,
            )
    rows = [summarize(e.name, outcomes[e.name]) for e in entries if outcomes[e.name]]
    rows += [Row(contender=name_, runs=0, note=why) for name_, why in skip.items()]
    add_ratios(rows)
    return rows
