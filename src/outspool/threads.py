"""The threads that run executions: one execution at a time each, kept for the next one.

An execution's thread spawns its program, waits for its end and records it. Starting a
thread per execution cost a worker running trivial jobs a sixth of its time holding the
GIL (``Thread.start`` creates the thread with the GIL held: a ``clone`` and the new
stack's page faults, slow on a virtual machine; docs/performance.md). Here a thread
that has run an execution waits for the next one for :data:`IDLE` seconds before it
ends; one is started only when none is idle.

A thread never ends while a program it started runs: the program's parent-death signal
fires when the thread that started it ends, and a thread here takes nothing new until
its execution has returned, nor ends before.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

IDLE = 10.0  #: seconds an idle thread waits for work before it ends
T = TypeVar("T")


class Threads:
    """Runs each task given to :meth:`run` at once, on an idle thread or a new one."""

    def __init__(self, name: str = "outspool-run", idle: float = IDLE) -> None:
        self._name = name
        self._idle_for = idle
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a task and not yet promised one
        self._tasks: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()

    @property
    def idle(self) -> int:
        """Threads waiting for a task (none promised to them)."""
        with self._lock:
            return self._idle

    def run(self, task: Callable[[], object]) -> None:
        """Run ``task`` on a thread of its own until it returns (it must not raise)."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that idle thread is promised this task
        self._tasks.put(task)
        if start:
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self._idle_for)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody was promised this thread: it ends
                        self._idle -= 1
                        return
                continue  # a task was promised to an idle thread meanwhile: take it
            task()
            with self._lock:
                self._idle += 1


class PerProcess(Generic[T]):
    """One ``T`` per process, made on first use, and anew in a forked child (which has
    none of its parent's threads)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made: tuple[int, T] | None = None

    def get(self) -> T:
        with self._lock:
            if self._made is None or self._made[0] != os.getpid():
                self._made = (os.getpid(), self._make())
            return self._made[1]


_shared = PerProcess(Threads)


def shared() -> Threads:
    """This process's execution threads."""
    return _shared.get()
