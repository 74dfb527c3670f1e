"""Integration tests that take ``spool`` run on every backend: SQLite, then PostgreSQL.

A PostgreSQL test gets a fresh schema, dropped at teardown; without a server it is
skipped (or fails under ``OUTSPOOL_TEST_POSTGRES=required``): see tests/postgres/database.py.
Tests that need the SQLite file itself take ``db_path`` and stay SQLite-only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from outspool import Outspool, Settings
from tests.postgres.database import fresh_schema

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """Where the store of this test lives, on each backend in turn."""
    if request.param == "sqlite":
        yield str(db_path)
        return
    with fresh_schema() as url:
        yield url


@pytest.fixture
def spool(db_url: str, settings: Settings) -> Iterator[Outspool]:
    with Outspool(db_url, settings) as opened:
        yield opened


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for the test (root only; skipped with a reason elsewhere)."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
