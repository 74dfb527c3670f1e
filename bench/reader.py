"""The monitor in the fan-in scenario: query the last 100 lines every 10 ms, time each query.

``python bench/reader.py KIND DB STOP_FILE ID...`` with KIND ``sketch``, ``naive`` or
``outspool``. Each query reads the tail of one execution (round robin over the IDs) with its
own short transaction. Prints one JSON object: latencies (s) and errors (messages counted).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sketch

INTERVAL = 0.010
TAIL = 100

Tail = Callable[[str], list[str]]


def _naive_tail(conn: sqlite3.Connection) -> Tail:
    def tail(execution_id: str) -> list[str]:
        rows = conn.execute(
            "SELECT data FROM output_lines WHERE execution_id = ? ORDER BY id DESC LIMIT ?",
            (int(execution_id), TAIL),
        ).fetchall()
        return [r[0].decode("utf-8", "replace") for r in reversed(rows)]

    return tail


def _outspool_tail(db: str) -> Tail:
    from bench import outspool_api

    return outspool_api.tail_reader(db, TAIL)


def make_tail(kind: str, db: str) -> Tail:
    if kind == "outspool":
        return _outspool_tail(db)
    conn = sqlite3.connect(db, timeout=5, isolation_level=None)
    if kind == "naive":
        return _naive_tail(conn)
    return lambda execution_id: sketch.tail_lines(conn, execution_id, TAIL)


def _warm_up(tail: Tail, ids: list[str]) -> None:
    """Wait (uncounted, 30 s at most) until every execution's schema and row exist."""
    deadline = time.monotonic() + 30
    for execution_id in ids:
        while time.monotonic() < deadline:
            try:
                tail(execution_id)
                break
            except Exception:
                time.sleep(INTERVAL)


def main(argv: list[str]) -> int:
    kind, db, stop, ids = argv[0], argv[1], Path(argv[2]), argv[3:]
    tail = make_tail(kind, db)
    _warm_up(tail, ids)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lines_seen = 0
    i = 0
    while not stop.exists():
        started = time.perf_counter()
        try:
            lines_seen = len(tail(ids[i % len(ids)]))
        except Exception as exc:  # every failure a user would see counts
            errors[f"{type(exc).__name__}: {exc}"] += 1
        latencies.append(time.perf_counter() - started)
        i += 1
        time.sleep(max(0.0, INTERVAL - (time.perf_counter() - started)))
    json.dump({"latencies": latencies, "errors": dict(errors), "last_tail": lines_seen}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
