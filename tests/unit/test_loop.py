"""The capture loop's wake-ups: what other threads ask is never lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from outspool.loop import Loop


class Counter:
    """A loop client that only counts what it is told (no fds)."""

    def __init__(self) -> None:
        self.pokes = 0
        self.attached_once = threading.Event()
        self.seen = threading.Condition()

    def attached(self, loop: Loop, now: float) -> None:
        self.attached_once.set()

    def ready(self, fd: int, events: int) -> bool:
        return False

    def poked(self, now: float) -> None:
        with self.seen:
            self.pokes += 1
            self.seen.notify_all()

    def poked_again(self, poke: Callable[[], None]) -> bool:
        """Whether ``poked`` is called after ``poke()`` (within a minute)."""
        with self.seen:
            before = self.pokes
        poke()
        with self.seen:
            return self.seen.wait_for(lambda: self.pokes > before, 60)

    def due(self, now: float) -> None:
        pass

    def failed(self, exc: BaseException) -> None:
        raise AssertionError(f"client failed: {exc!r}")


def test_no_request_is_lost_while_many_threads_wake_the_loop() -> None:
    """Pokes from many threads at once: after each thread's last poke, the loop calls
    ``poked`` again (pokes of one pass are taken together, so fewer calls than pokes)."""
    loop = Loop("test-loop")  # not the shared loop: its thread is not "outspool-capture"
    clients = [Counter() for _ in range(8)]
    for client in clients:
        loop.add(client)
    for client in clients:
        assert client.attached_once.wait(60)
    go = threading.Barrier(len(clients))

    def hammer(client: Counter) -> None:
        go.wait()
        for _ in range(5000):
            loop.poke(client)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:  # a last poke after the storm: it must arrive
        assert client.poked_again(partial(loop.poke, client))
