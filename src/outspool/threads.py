"""One object per process: made on first use, and made anew in a forked child.

The capture loop (``loop.shared()``) is one per process: a forked child has none of its
parent's threads, so it must not use the parent's loop. Executions are not run on
threads of their own: a pool of :data:`outspool.client.HANDLERS` threads per ``Outspool``
starts and ends them (docs/architecture.md, *Capture*).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


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
