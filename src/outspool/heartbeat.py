"""Presence of a capturing process: registration, heartbeats, cancel requests.

Every process that runs programs (a worker, or ``outspool run``) registers in
the ``workers`` table and refreshes its heartbeat every ``heartbeat_interval``.
An execution whose process stopped heartbeating for ``heartbeat_timeout`` is
``lost`` (see :mod:`outspool.queue`). The same thread looks for cancellation
requests (``outspool cancel`` from anywhere) for the executions it runs.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from outspool.errors import StoreError
from outspool.store.base import Store

CANCEL_POLL = 0.25  # seconds between looks for cancellation requests


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
        self.worker_id = worker_id
        self._kind = kind
        self._interval = interval
        self._on_cancel = on_cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outspool-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.store.register_worker(
            self.worker_id, socket.gethostname(), os.getpid(), self._kind, time.time()
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.store.heartbeat(self.worker_id, time.time(), stopped=True)
        except StoreError as exc:
            print(f"outspool: could not record the end of {self.worker_id}: {exc}", file=sys.stderr)

    def _run(self) -> None:
        last_beat = time.monotonic()
        failing: str | None = None
        while not self._stop.wait(min(CANCEL_POLL, self._interval)):
            try:
                if time.monotonic() - last_beat >= self._interval:
                    self.store.heartbeat(self.worker_id, time.time())
                    last_beat = time.monotonic()
                for execution_id, reason in self.store.cancel_requests(self.worker_id):
                    self._on_cancel(execution_id, reason)
                failing = None
            except StoreError as exc:  # the database is away: keep trying, say so once
                if str(exc) != failing:
                    failing = str(exc)
                    print(f"outspool: heartbeat failed, retrying: {exc}", file=sys.stderr)
