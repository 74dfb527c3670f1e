"""The Store contract runs against every backend listed in ``BACKENDS``.

Adding PostgreSQL means adding ``pytest.param("postgres", marks=pytest.mark.postgres)``
here and a branch in :func:`_url`; every test of the suite then runs on it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outspool.settings import Settings
from outspool.store import Store, open_store

BACKENDS = [pytest.param("sqlite", id="sqlite")]

OpenStore = Callable[[], Store]


def _url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return str(tmp_path / "contract.db")
    raise AssertionError(f"no URL for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def open_another(backend: str, tmp_path: Path) -> Iterator[OpenStore]:
    """Open (more) stores on the same database, as another process would; closed at teardown."""
    opened: list[Store] = []
    url = _url(backend, tmp_path)

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
