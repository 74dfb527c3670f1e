"""CPU per captured line, split by thread: N tickers run through the library in this process.

``python -m bench.scale.capture_cpu N LINES [N LINES ...]`` runs N programs at once, each
printing LINES lines 100 ms apart (``common.ticker``), into a fresh SQLite store, and
prints one JSON object per run: the process's CPU per line, and that of the capture loop
thread (``outspool-capture``) and of the writer thread (``outspool-writer``), read from
``/proc/self/task``. Two runs that differ only in LINES give the marginal CPU per line
(the difference), free of the per-program costs (spawning, the start and end commits).
On a version without the capture loop, ``loop_us_per_line`` is 0 and the capture's CPU is
in ``process_us_per_line``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.measure import stat_cpu
from bench.scale.common import ticker


def thread_cpu(native_id: int | None) -> float:
    return stat_cpu(Path(f"/proc/self/task/{native_id}/stat")) or 0.0


def _native_id(name: str) -> int | None:
    return next((t.native_id for t in threading.enumerate() if t.name == name), None)


def one(n: int, lines: int) -> dict[str, float | int | str]:
    from outspool import Outspool, Settings

    with (
        tempfile.TemporaryDirectory() as work,
        Outspool(str(Path(work) / "cpu.db"), Settings.load(sandbox="none")) as spool,
    ):
        began = time.process_time()
        loop_began = thread_cpu(_native_id("outspool-capture"))  # one per process: runs add up
        handles = [spool.start(ticker(0.1, lines)) for _ in range(n)]
        for handle in handles[:1]:
            handle.wait()  # the threads to read are alive until the last program ends
        ids = {t.name: t.native_id for t in threading.enumerate()}
        for handle in handles:
            handle.wait()
        loop = thread_cpu(ids.get("outspool-capture")) - loop_began
        writer = thread_cpu(ids.get("outspool-writer"))
        total = time.process_time() - began
    count = n * lines
    return {
        "programs": n,
        "lines": count,
        "process_us_per_line": round(total / count * 1e6, 1),
        "loop_us_per_line": round(loop / count * 1e6, 1),
        "writer_us_per_line": round(writer / count * 1e6, 1),
        "load": os.getloadavg()[0],
    }


def main(argv: list[str]) -> int:
    pairs = [(int(argv[i]), int(argv[i + 1])) for i in range(0, len(argv) - 1, 2)]
    for n, lines in pairs:
        print(json.dumps(one(n, lines)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
