"""Fixtures for the PostgreSQL-only tests: a fresh schema per test, stores opened on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from outspool.settings import Settings
from outspool.store import Store, open_store
from tests.postgres.database import fresh_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL (``...?schema=t_...``) of an empty schema, dropped at teardown."""
    with fresh_schema() as url:
        yield url


@pytest.fixture
def open_pg(pg_url: str) -> Iterator[Callable[..., Store]]:
    """``open_pg(url=pg_url)``: an opened store, closed at teardown (before the schema goes)."""
    opened: list[Store] = []

    def connect(url: str = pg_url) -> Store:
        store = open_store(url, Settings.load(busy_timeout=10.0))
        opened.append(store)
        return store

    yield connect
    for store in opened:
        store.close()
