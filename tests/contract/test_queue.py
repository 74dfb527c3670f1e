"""The queue verbs of the Store protocol, against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import threading

import pytest

from outspool.jobs import Job
from outspool.models import Outcome, Status
from outspool.store import Store
from tests.contract.conftest import OpenStore


def queued(store: Store, execution_id: str, created_at: float) -> None:
    store.create(Job(command=("echo",)), execution_id, created_at, Status.QUEUED)


def test_claim_takes_the_oldest_queued_once(store: Store) -> None:
    queued(store, "b", 2.0)
    queued(store, "a", 1.0)
    first = store.claim("w1", 10.0)
    second = store.claim("w2", 10.0)
    assert first is not None and second is not None
    assert (first.id, first.status, first.worker_id) == ("a", Status.RUNNING, "w1")
    assert (second.id, second.worker_id) == ("b", "w2")
    assert store.claim("w1", 11.0) is None


def test_claim_many_takes_the_oldest_up_to_the_limit_once(store: Store) -> None:
    for i in range(10):
        queued(store, f"job-{i}", float(10 - i))  # job-9 is the oldest
    first = store.claim_many("w1", 20.0, 4)
    assert [ex.id for ex in first] == ["job-9", "job-8", "job-7", "job-6"]
    assert {(ex.status, ex.worker_id) for ex in first} == {(Status.RUNNING, "w1")}
    rest = store.claim_many("w2", 20.0, 100)
    assert [ex.id for ex in rest] == [f"job-{i}" for i in range(5, -1, -1)]
    assert store.claim_many("w1", 21.0, 4) == []
    assert store.get("job-9").worker_id == "w1"


@pytest.mark.parametrize("batch", [1, 3])
def test_concurrent_claims_from_separate_connections_never_share(
    store: Store, open_another: OpenStore, batch: int
) -> None:
    for i in range(60):
        queued(store, f"job-{i:03d}", float(i))
    stores = [open_another() for _ in range(4)]
    claimed: list[list[str]] = [[] for _ in stores]

    def drain(index: int) -> None:
        while taken := stores[index].claim_many(f"w{index}", 100.0, batch):
            claimed[index] += [ex.id for ex in taken]

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [i for ids in claimed for i in ids]
    assert sorted(everything) == [f"job-{i:03d}" for i in range(60)]


def test_cancel_ends_a_queued_execution_and_flags_a_running_one(store: Store) -> None:
    queued(store, "q", 1.0)
    queued(store, "r", 2.0)
    assert store.claim("w1", 3.0) is not None  # takes q, the oldest
    running = store.cancel("q", 4.0, "stop it")
    assert running.status is Status.RUNNING and running.cancel_requested
    assert store.cancel_requests("w1") == [("q", "stop it")]
    assert store.cancel_requests("w2") == []
    ended = store.cancel("r", 5.0, "not needed")
    assert (ended.status, ended.reason, ended.finished_at) == (Status.CANCELLED, "not needed", 5.0)


def test_a_stale_heartbeat_makes_running_executions_lost(store: Store) -> None:
    store.register_worker("alive", "host-a", 1, "worker", 100.0)
    store.register_worker("dead", "host-b", 2, "worker", 100.0)
    for execution_id, created in (("x", 1.0), ("y", 2.0)):
        queued(store, execution_id, created)
    assert store.claim("alive", 100.0) is not None
    assert store.claim("dead", 100.0) is not None
    store.heartbeat("alive", 200.0)
    lost = store.find_lost(stale_before=150.0)
    assert [(x.execution_id, x.worker_id, x.hostname) for x in lost] == [("y", "dead", "host-b")]
    assert store.mark_lost("y", 201.0, "gone")
    assert not store.mark_lost("y", 202.0, "gone again")  # ends once
    assert store.get("y").status is Status.LOST
    assert store.find_lost(stale_before=150.0) == []


def test_a_cleanly_stopped_process_leaves_nothing_running_unnoticed(store: Store) -> None:
    store.register_worker("w", "host", 1, "run", 100.0)
    queued(store, "z", 1.0)
    assert store.claim("w", 100.0) is not None
    store.heartbeat("w", 101.0, stopped=True)
    assert [x.execution_id for x in store.find_lost(stale_before=0.0)] == ["z"]


def test_secrets_and_limits_travel_with_a_queued_job_and_secrets_go_when_it_ends(
    store: Store,
) -> None:
    secret = {"API_TOKEN": "s3cr3t-value-42"}
    for execution_id, created in (("done", 1.0), ("cancelled", 2.0), ("lost", 3.0)):
        job = Job(
            command=("echo",),
            cpu_time=1.5,
            memory=1 << 30,
            max_processes=64,
            max_file_size=1 << 20,
            network=True,
            secrets=secret,
        )
        store.create(job, execution_id, created, Status.QUEUED)
    claimed = store.claim("w1", 10.0)
    assert claimed is not None and claimed.id == "done"
    assert dict(claimed.secrets) == secret
    assert (claimed.cpu_time, claimed.memory, claimed.max_processes) == (1.5, 1 << 30, 64)
    assert (claimed.max_file_size, claimed.network) == (1 << 20, True)
    assert "s3cr3t" not in repr(claimed) and "s3cr3t" not in str(claimed.to_json())
    assert claimed.to_json()["memory"] == 1 << 30
    assert store.finish("done", Outcome(Status.SUCCEEDED, 0), 11.0, None)
    store.cancel("cancelled", 12.0, "not needed")
    assert store.claim("w1", 13.0) is not None  # "lost"
    assert store.mark_lost("lost", 15.0, "gone")
    for execution_id in ("done", "cancelled", "lost"):
        ended = store.get(execution_id)
        assert ended.status.finished and ended.secrets == {}
        assert ended.memory == 1 << 30  # the limits stay: they describe the run
