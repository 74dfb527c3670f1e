"""The Store contract runs against every backend listed in ``BACKENDS``.

PostgreSQL tests get a fresh schema each, dropped at teardown; without a server they
are skipped (or fail under ``OUTSPOOL_TEST_POSTGRES=required``): see tests/postgres/database.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outspool.client import Outspool
from outspool.settings import Settings
from outspool.store import Store, open_store
from tests.postgres.database import fresh_schema

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

OpenStore = Callable[[], Store]


@contextlib.contextmanager
def store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """Where a new store of ``backend`` may be made (nothing is there yet); cleaned up after."""
    if backend == "sqlite":
        yield str(tmp_path / "contract.db")
        return
    if backend == "postgres":
        with fresh_schema() as url:
            yield url
        return
    raise AssertionError(f"no URL for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def open_another(backend: str, tmp_path: Path) -> Iterator[OpenStore]:
    """Open (more) stores on the same database, as another process would; closed at teardown."""
    opened: list[Store] = []
    with store_url(backend, tmp_path) as url:

        def connect() -> Store:
            store = open_store(url, Settings.load(busy_timeout=10.0, poll_interval=0.005))
            opened.append(store)
            return store

        yield connect
        for store in opened:
            store.close()


@pytest.fixture
def store(open_another: OpenStore) -> Store:
    """An opened, migrated, empty store."""
    return open_another()


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database URL of the backend, for tests that open the library on it."""
    with store_url(backend, tmp_path) as found:
        yield found


@pytest.fixture
def spool(url: str) -> Iterator[Outspool]:
    """The library on the backend (short grace periods, so stopping programs is quick)."""
    with Outspool(url, Settings.load(kill_grace=0.5, drain_grace=0.5)) as opened:
        yield opened
