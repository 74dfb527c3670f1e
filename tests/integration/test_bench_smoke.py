"""The benchmark harness stays runnable: its modules import, and the bulk filler writes rows
the library reads back as finished executions (so a schema change cannot break it silently).

No timing here: figures come from ``make bench``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from outspool import Outspool, Status


def test_every_bench_scenario_module_imports() -> None:
    sections: Any = importlib.import_module("bench.sections")
    keys = [scenario.key for scenario in sections.SCENARIOS]
    assert len(keys) == len(set(keys))
    assert {"growth", "live", "watchers", "startup", "queue", "pgbulk"} <= set(keys)
    assert all(callable(scenario.run) for scenario in sections.SCENARIOS)


def test_the_filler_writes_executions_the_library_reads(tmp_path: Path) -> None:
    fill: Any = importlib.import_module("bench.scale.fill")
    db = str(tmp_path / "grown.db")
    with Outspool(db) as spool:
        fill.fill(db, 0, 120, 1.0e9)
        fill.fill(db, 120, 150, 1.0e9)
        newest = spool.list(limit=200)
        failed = spool.list(Status.FAILED, limit=200)
        assert len(newest) == 150
        assert [ex.created_at for ex in newest] == sorted(
            (ex.created_at for ex in newest), reverse=True
        )
        assert len(failed) == 12 and all(ex.exit_code == 1 for ex in failed)
        some = newest[7]
        assert spool.read(some.id) == spool.tail(some.id, 10).data
        assert spool.read(some.id).startswith(b"step 142: ")


def test_the_checksum_upgrade_scenario_opens_a_true_format_7_store(tmp_path: Path) -> None:
    """It rebuilds an older store by undoing the later formats; one it forgets makes the
    upgrade fail (as it did when format 9 and 10 came)."""
    checksums: Any = importlib.import_module("bench.checksums")
    (row,) = checksums.upgrade(1 << 20, str(tmp_path / "old.db"))
    assert row.contender == "upgrade to format 8, SQLite (inline chunks)"
    assert row.wall_s is not None and row.wall_s > 0
