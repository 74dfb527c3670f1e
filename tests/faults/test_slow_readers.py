"""A reader that stops reading holds about a megabyte, not a batch of 64 chunks."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from outspool import Outspool, Settings
from outspool.codec import ChunkRecord
from outspool.follow import BATCH_BYTES, Follower, iter_output, read_range
from outspool.store.base import Store
from tests.helpers import wait_until
from tests.web.conftest import ServeFactory

BIG = f"import os,sys\nfor _ in range(24): sys.stdout.buffer.write(os.urandom({1 << 20}))\n"


class Observed:
    """A real store, seen through: records the output bytes of each chunk query."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.fetched: list[int] = []

    def chunks_after(self, execution_id: str, after: int, limit: int) -> list[ChunkRecord]:
        records = self._store.chunks_after(execution_id, after, limit)
        self.fetched.append(sum(r.stdout_size + r.stderr_size for r in records))
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def big(spool: Outspool) -> str:
    """A finished execution of 24 MiB in chunks of 1 MiB."""
    handle = spool.start([sys.executable, "-c", BIG], echo=False)
    ex = handle.wait(120)
    assert ex.stdout_size == 24 << 20
    return ex.id


@pytest.fixture
def settings() -> Settings:
    return Settings.load(kill_grace=0.5, drain_grace=0.5, max_chunk_size=1 << 20)


def most_held(spool: Outspool, read: Any) -> int:
    seen = Observed(spool.store)
    read(seen)
    return max(seen.fetched)


def test_every_reader_fetches_about_a_megabyte_at_a_time(spool: Outspool, big: str) -> None:
    bound = 2 * BATCH_BYTES + (2 << 20)  # the bound, plus one chunk of up to 2 MiB
    assert most_held(spool, lambda s: sum(map(len, iter_output(s, big, None)))) <= bound
    assert most_held(spool, lambda s: read_range(s, big, None, 0, 20 << 20)) <= bound

    def follow(store: Store) -> None:
        follower = Follower(store, big)
        while not follower.done:
            follower.poll(0)

    assert most_held(spool, follow) <= bound


def test_a_raw_download_that_disconnects_leaves_nothing_behind(
    serve: ServeFactory, big: str
) -> None:
    served = serve()
    with served.client() as client:
        for _ in range(3):
            with client.stream("GET", f"/api/executions/{big}/raw") as response:
                assert response.status_code == 200
                next(response.iter_raw(65536))  # then stop reading and hang up
        with client.stream("GET", f"/api/executions/{big}/events") as events:
            next(events.iter_lines())
        wait_until(lambda: not served.hub.waiters, message="no waiter left after disconnects")
        assert client.get("/api/executions").status_code == 200
