"""Damaged rows never crash a listing: they show as damaged and the rest is listed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status
from outspool.models import Execution
from tests.conftest import RunCli
from tests.faults.damage import connection
from tests.web.conftest import ServeFactory

#: column -> a value no outspool ever stored there
DAMAGE = {
    "status": "sleeping",
    "command": "not json [",
    "created_at": "yesterday",
    "env": '["not", "a", "map"]',
    "stdout_size": -5,
}


@pytest.fixture
def spool(db_path: Path, settings: Settings) -> Iterator[Outspool]:
    """SQLite only: damage is written into the file with sqlite3."""
    with Outspool(str(db_path), settings) as opened:
        yield opened


@pytest.fixture
def damaged(db_path: Path, run_cli: RunCli) -> dict[str, str]:
    """One healthy execution, then one damaged in each way; column -> execution ID."""
    for _ in range(len(DAMAGE) + 1):
        assert run_cli("run", "-q", "--db", str(db_path), "--", "echo", "hello").rc == 0
    with Outspool(str(db_path)) as spool:
        ids = [ex.id for ex in spool.list(limit=100)]
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for (column, value), execution_id in zip(DAMAGE.items(), ids[1:], strict=True):
                conn.execute(
                    f"UPDATE executions SET {column} = ? WHERE id = ?", (value, execution_id)
                )
    finally:
        conn.close()
    return {"healthy": ids[0], **dict(zip(DAMAGE, ids[1:], strict=True))}


def test_ls_lists_damaged_rows_as_damaged_and_the_rest(
    db_path: Path, run_cli: RunCli, damaged: dict[str, str]
) -> None:
    listing = run_cli("ls", "--db", str(db_path), "--json")
    assert listing.rc == 0, listing.stderr
    assert b"Traceback" not in listing.stderr
    rows = {row["id"]: row for row in json.loads(listing.stdout)}
    # a text created_at sorts after every number in SQLite: it is listed first
    assert set(rows) == set(damaged.values())
    assert rows[damaged["healthy"]]["status"] == "succeeded"
    for column in DAMAGE:
        row = rows[damaged[column]]
        assert row["status"] == "damaged", column
        assert column in row["damage"]
    table = run_cli("ls", "--db", str(db_path))
    assert table.rc == 0 and table.stdout.count(b"damaged") == len(DAMAGE)


@pytest.mark.parametrize("limit", [1, 2, 100])
def test_ls_status_damaged_finds_the_damaged_rows(
    db_path: Path, run_cli: RunCli, damaged: dict[str, str], limit: int
) -> None:
    """No row stores status ``damaged``: ``ls --status damaged`` found none."""
    listing = run_cli("ls", "--db", str(db_path), "--status", "damaged", "-n", str(limit), "--json")
    assert listing.rc == 0, listing.stderr
    found = [row["id"] for row in json.loads(listing.stdout)]
    everything = run_cli("ls", "--db", str(db_path), "--json")
    newest_first = [row["id"] for row in json.loads(everything.stdout)]
    expected = [i for i in newest_first if i != damaged["healthy"]]
    assert found == expected[:limit]


def test_ls_pages_through_damaged_rows(spool: Outspool, damaged: dict[str, str]) -> None:
    """Paging with ``before`` reaches every row once, the damaged ones too."""
    seen: list[str] = []
    before = None
    while page := spool.list(limit=2, before=before):
        seen += [ex.id for ex in page]
        before = page[-1].id
    assert sorted(seen) == sorted(damaged.values())
    damaged_pages: list[str] = []
    before = None
    while page := spool.list(status=Status.DAMAGED, limit=2, before=before):
        damaged_pages += [ex.id for ex in page]
        before = page[-1].id
    assert sorted(damaged_pages) == sorted(set(damaged.values()) - {damaged["healthy"]})


def test_metrics_count_a_damaged_status(serve: ServeFactory, damaged: dict[str, str]) -> None:
    with serve().client() as client:
        answer = client.get("/metrics")
        assert answer.status_code == 200, answer.text
        assert 'status="damaged"' in answer.text


@pytest.mark.parametrize("column", list(DAMAGE))
def test_show_and_logs_of_a_damaged_row(
    db_path: Path, run_cli: RunCli, damaged: dict[str, str], column: str
) -> None:
    shown = run_cli("show", "--db", str(db_path), damaged[column])
    assert shown.rc == 0, shown.stderr
    assert b"damaged" in shown.stdout
    logs = run_cli("logs", "--db", str(db_path), damaged[column])
    assert b"Traceback" not in logs.stderr
    assert logs.rc == 0, logs.stderr
    assert logs.stdout == b"hello\n"  # the output itself is intact


def test_the_api_lists_and_shows_damaged_rows(serve: ServeFactory, damaged: dict[str, str]) -> None:
    with serve().client() as client:
        listing = client.get("/api/executions", params={"limit": 100})
        assert listing.status_code == 200
        statuses = {row["id"]: row["status"] for row in listing.json()["executions"]}
        assert list(statuses.values()).count("damaged") == len(DAMAGE)
        for column in DAMAGE:
            one = client.get(f"/api/executions/{damaged[column]}")
            assert one.status_code == 200
            assert one.json()["status"] == "damaged"
            assert client.get(f"/api/executions/{damaged[column]}/output").status_code == 200


def test_a_damaged_row_reads_without_raising() -> None:
    row = {"id": "x", "status": "sleeping", "command": "[", "created_at": "yesterday"}
    ex = Execution.from_row(row)  # the missing columns are damage too
    assert ex.status is Status.DAMAGED
    assert ex.damage is not None and "status" in ex.damage and "created_at" in ex.damage


def test_damaged_rows_on_either_backend(db_url: str, run_cli: RunCli) -> None:
    """The damage each backend's columns can hold (PostgreSQL's created_at is a number):
    listed as damaged with the rest, found by ``--status damaged``, shown, their output read."""
    damage = {c: v for c, v in DAMAGE.items() if c != "created_at"}
    for _ in range(len(damage) + 1):
        assert run_cli("run", "-q", "--db", db_url, "--", "echo", "hello").rc == 0
    with Outspool(db_url) as spool:
        healthy, *hurt = [ex.id for ex in spool.list(limit=100)]
        with connection(spool.store) as run:
            for (column, value), execution_id in zip(damage.items(), hurt, strict=True):
                run(f"UPDATE executions SET {column} = %s WHERE id = %s", (value, execution_id))
    listing = run_cli("ls", "--db", db_url, "--json")
    assert listing.rc == 0, listing.stderr
    statuses = {row["id"]: row["status"] for row in json.loads(listing.stdout)}
    assert statuses == {healthy: "succeeded", **dict.fromkeys(hurt, "damaged")}
    found = run_cli("ls", "--db", db_url, "--status", "damaged", "--json")
    assert found.rc == 0, found.stderr
    assert [row["id"] for row in json.loads(found.stdout)] == hurt
    with Outspool(db_url) as spool:
        for execution_id in hurt:
            assert spool.get(execution_id).status is Status.DAMAGED
            assert spool.read(execution_id) == b"hello\n"
    shown = run_cli("show", "--db", db_url, hurt[0])
    assert shown.rc == 0 and b"damaged" in shown.stdout, shown
    logs = run_cli("logs", "--db", db_url, hurt[0])
    assert (logs.rc, logs.stdout) == (0, b"hello\n"), logs
