"""The job queue over a store: submit, cancel, recover.

Claiming is the store's (one atomic statement per backend); this module holds
the rules around it: what may be submitted, what cancelling means in each
state, and how executions of a dead process are found and ended as ``lost``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from outspool.errors import InvalidStateError
from outspool.models import Execution, Status
from outspool.runner import EXECUTION_ENV, Job, new_id
from outspool.settings import Settings
from outspool.store.base import Store


def submit(store: Store, settings: Settings, job: Job) -> Execution:
    """Queue ``job``; an unknown language or a bad timeout is refused here, not later."""
    job.validate(settings)
    return store.create(job.new_execution(settings, Status.QUEUED), new_id(), time.time())


def cancel(store: Store, execution_id: str, reason: str = "cancelled by request") -> Execution:
    """A queued execution ends ``cancelled`` now; a running one is stopped by its process."""
    ex = store.get(execution_id)
    if ex.status.finished:
        raise InvalidStateError(f"execution {ex.id} already ended: {ex.status.value}")
    return store.cancel(ex.id, time.time(), reason)


def recover(store: Store, settings: Settings) -> list[str]:
    """End as ``lost`` the running executions whose process stopped heartbeating.

    Their output stored so far is kept. On this host, any of their processes
    still alive (found by :data:`EXECUTION_ENV`) are killed.
    """
    now = time.time()
    ended: list[str] = []
    host = socket.gethostname()
    for lost in store.find_lost(now - settings.heartbeat_timeout):
        who = f"worker {lost.worker_id}" if lost.worker_id else "its capturing process"
        reason = f"{who} stopped heartbeating; output stored so far is kept"
        if store.mark_lost(lost.execution_id, now, reason):
            ended.append(lost.execution_id)
            if lost.hostname == host:
                kill_orphans(lost.execution_id)
    return ended


def kill_orphans(execution_id: str) -> int:
    """SIGKILL every process on this host whose environment carries this execution's ID."""
    marker = f"{EXECUTION_ENV}={execution_id}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:
                continue
    return killed
