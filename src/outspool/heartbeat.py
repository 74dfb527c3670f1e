"""Presence of a capturing process: registration, heartbeats, cancel requests.

Every process that runs programs (a worker, or ``outspool run``) registers in
the ``workers`` table and refreshes its heartbeat every ``heartbeat_interval``.
An execution whose process stopped heartbeating for ``heartbeat_timeout`` is
``lost``: :func:`end_lost` is the one place that decides it, for followers and
recovery alike. A late heartbeat is not enough on the capturing process's own
machine: there the kernel is asked (:mod:`outspool.liveness`), and a process
that is alive is never declared lost. A process that finds its executions
marked ``lost`` while it is alive (by a recoverer elsewhere) restores them.
The same thread looks for cancellation requests (``outspool cancel`` from
anywhere) for the executions it runs. It works on a store of its own
(:meth:`~outspool.store.base.Store.presence`): on PostgreSQL its own connection,
where no statement waits for a lock longer than a heartbeat interval, so a
writer stalled behind a lock or in a long transaction does not delay it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from outspool.errors import StoreError
from outspool.liveness import Liveness, check, identity
from outspool.store.base import LostExecution, Store

CANCEL_POLL = 0.25  # seconds between looks for cancellation requests
log = logging.getLogger("outspool.heartbeat")


def end_lost(
    store: Store, stale_after: float, execution_id: str | None = None
) -> list[LostExecution]:
    """End as ``lost`` the running executions (all, or just ``execution_id``) whose
    capturing process has not heartbeated for ``stale_after`` seconds; those it ended.

    Their output stored so far is kept. Nothing is killed here: reading may call
    this; killing leftover processes is recovery's (:func:`outspool.queue.recover`).
    """
    now = time.time()
    ended: list[LostExecution] = []
    for lost in store.find_lost(now - stale_after):
        if execution_id is not None and lost.execution_id != execution_id:
            continue
        state = check(lost.process)
        if state is Liveness.ALIVE:
            continue  # a late heartbeat from a live process: the store is slow, not the capture
        if store.mark_lost(lost.execution_id, now, _lost_reason(lost, state)):
            ended.append(lost)
    return ended


def _lost_reason(lost: LostExecution, state: Liveness) -> str:
    who = f"worker {lost.worker_id}" if lost.worker_id else "its capturing process"
    if state is Liveness.DEAD:
        return f"{who} stopped heartbeating and is gone; output stored so far is kept"
    return f"{who} stopped heartbeating; output stored so far is kept"


class Heartbeat:
    """A thread that keeps this process's presence fresh in the store."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        kind: str,
        interval: float,
        on_cancel: Callable[[str, str | None], None],
    ) -> None:
        self.store = store
        self._presence = store
        self.worker_id = worker_id
        self._kind = kind
        self._interval = interval
        self._on_cancel = on_cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outspool-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._presence = self.store.presence(self._interval)
        try:
            self._presence.register_worker(
                self.worker_id,
                socket.gethostname(),
                os.getpid(),
                self._kind,
                time.time(),
                process=identity(),
            )
        except BaseException:
            self._close_presence()
            raise
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self._presence.heartbeat(self.worker_id, time.time(), stopped=True)
        except StoreError as exc:
            log.warning("could not record the end of %s: %s", self.worker_id, exc)
        finally:
            self._close_presence()

    def _close_presence(self) -> None:
        if self._presence is not self.store:
            self._presence.close()
            self._presence = self.store

    def _restore(self) -> None:
        """Executions of this live process that someone marked ``lost`` run again."""
        restored = self._presence.restore_lost(self.worker_id)
        if restored:
            log.warning(
                "%d execution(s) of %s were marked lost while it was alive: restored",
                restored,
                self.worker_id,
            )

    def _run(self) -> None:
        last_beat = time.monotonic()
        failing: str | None = None
        while not self._stop.wait(min(CANCEL_POLL, self._interval)):
            try:
                if time.monotonic() - last_beat >= self._interval:
                    self._presence.heartbeat(self.worker_id, time.time())
                    last_beat = time.monotonic()
                    self._restore()
                for execution_id, reason in self._presence.cancel_requests(self.worker_id):
                    self._on_cancel(execution_id, reason)
                failing = None
            except StoreError as exc:  # the database is away: keep trying, say so once
                if str(exc) != failing:
                    failing = str(exc)
                    log.warning("heartbeat failed, retrying: %s", exc)
