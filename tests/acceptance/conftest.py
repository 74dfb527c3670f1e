"""Acceptance fixtures: a database path as the CLI takes it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(db_path: Path) -> str:
    return str(db_path)
