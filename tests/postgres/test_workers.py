"""Worker processes on separate connections share one queue: every job runs exactly once."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from outspool import queue
from outspool.follow import read_all
from outspool.jobs import Job
from outspool.models import Status
from outspool.settings import Settings
from outspool.store import Store

pytestmark = pytest.mark.postgres

JOBS = 500
WORKERS = 4


def test_four_workers_run_500_jobs_exactly_once(
    open_pg: Callable[..., Store],
    pg_url: str,
    spawn_cli: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    store = open_pg()
    settings = Settings.load()
    ran = tmp_path / "ran.log"  # every run appends its number: a job run twice shows twice
    ids = [
        queue.submit(store, settings, Job(language="sh", code=f"echo {n}; echo {n} >> {ran}")).id
        for n in range(JOBS)
    ]
    workers = [
        spawn_cli("worker", "--burst", "--concurrency", "4", "--db", pg_url) for _ in range(WORKERS)
    ]
    completed = 0
    for proc in workers:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
        found = re.search(rb"stopped after (\d+) executions", err)
        assert found, err.decode()
        completed += int(found[1])

    assert completed == JOBS
    assert Counter(ran.read_text().split()) == Counter(str(n) for n in range(JOBS))
    assert store.list_executions(Status.QUEUED, limit=1) == []
    assert store.list_executions(Status.RUNNING, limit=1) == []
    by_worker: Counter[str | None] = Counter()
    for n, execution_id in enumerate(ids):
        ex = store.get(execution_id)
        assert ex.status is Status.SUCCEEDED, (ex.status, ex.reason)
        assert read_all(store, execution_id, None) == f"{n}\n".encode()
        by_worker[ex.worker_id] += 1
    assert len(by_worker) >= 2, by_worker  # the work really was shared
