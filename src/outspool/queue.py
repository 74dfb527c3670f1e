"""The job queue over a store: create, submit, cancel, mark lost, recover.

Claiming is the store's (one atomic statement per backend); this module holds
the rules around it: what may be stored, what cancelling means in each state,
and what recovery does once executions are ``lost`` (see
:func:`outspool.heartbeat.end_lost`, the one place that decides it).
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from outspool import limits as lim
from outspool.errors import InvalidStateError, NotFoundError
from outspool.heartbeat import end_lost
from outspool.jobs import Job, new_id
from outspool.liveness import Liveness, check
from outspool.models import Execution, Status
from outspool.runner import EXECUTION_ENV
from outspool.settings import Settings
from outspool.store.base import Store


def create(
    store: Store, settings: Settings, job: Job, status: Status, worker_id: str | None = None
) -> Execution:
    """Store a new execution of ``job``; an unknown language or a bad timeout is refused here."""
    job.validate(settings)
    as_run = replace(job, command=job.argv(settings))  # a language resolved on this machine
    return store.create(as_run, new_id(), time.time(), status, worker_id)


def submit(store: Store, settings: Settings, job: Job) -> Execution:
    """Queue ``job`` for a worker."""
    return create(store, settings, job, Status.QUEUED)


def cancel(store: Store, execution_id: str, reason: str = "cancelled by request") -> Execution:
    """A queued execution ends ``cancelled`` now; a running one is stopped by its process."""
    ex = store.get(execution_id)
    if ex.status.finished:
        raise InvalidStateError(f"execution {ex.id} already ended: {ex.status.value}")
    return store.cancel(ex.id, time.time(), reason)


def mark_lost(store: Store, settings: Settings) -> list[str]:
    """End as ``lost`` the running executions whose process stopped heartbeating (and,
    on its machine, is gone); their output stored so far is kept. Nothing is killed."""
    return [lost.execution_id for lost in end_lost(store, settings.heartbeat_timeout)]


def recover(store: Store, settings: Settings) -> list[str]:
    """:func:`mark_lost`, then kill on this host the processes still alive of any
    ``lost`` execution whose capturing process is gone (found by :data:`EXECUTION_ENV`,
    whoever marked it lost)."""
    ended = mark_lost(store, settings)
    kill_orphans(store)
    remove_cgroups(store)
    return ended


def remove_cgroups(store: Store) -> int:
    """Empty and remove the cgroups left on this host by executions of ``store`` that
    have ended, or are ``lost`` with their capturing process gone; how many."""
    removed = 0
    for execution_id, group in lim.left_behind().items():
        try:
            ex = store.get(execution_id)
        except NotFoundError:  # another store's execution
            continue
        if ex.status in (Status.QUEUED, Status.RUNNING, Status.DAMAGED):
            continue  # running, or not known to have ended
        if ex.status is Status.LOST and not _capturer_gone(store, ex):
            continue
        group.kill_all()
        group.remove()
        removed += 1
    return removed


def kill_orphans(store: Store) -> int:
    """SIGKILL every process on this host that belongs to a ``lost`` execution of ``store``."""
    killed = 0
    for execution_id, pids in _marked_processes().items():
        if not execution_id.isalnum():
            continue
        try:
            if not _capturer_gone(store, store.get(execution_id)):
                continue
        except NotFoundError:  # another store's execution
            continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                continue
    return killed


def _capturer_gone(store: Store, ex: Execution) -> bool:
    """Lost, and its capturing process is not alive: its programs are orphans."""
    if ex.status is not Status.LOST:
        return False
    process = store.worker_process(ex.worker_id) if ex.worker_id else None
    return check(process) is not Liveness.ALIVE


def _marked_processes() -> dict[str, list[int]]:
    """Processes on this host carrying :data:`EXECUTION_ENV`, by execution ID."""
    marker = f"{EXECUTION_ENV}=".encode()
    found: dict[str, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(marker):
                found[var[len(marker) :].decode(errors="replace")].append(int(entry.name))
    return found
