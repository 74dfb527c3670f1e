"""One object per process: made once, on first use."""

from __future__ import annotations

import os
import threading

from outspool.threads import PerProcess


def test_one_per_process() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(os.getpid())
        return len(made)

    per = PerProcess(make)
    assert made == []  # made on first use, not before
    assert per.get() == per.get() == 1
    assert made == [os.getpid()]


def test_made_once_when_many_threads_ask_at_once() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    per = PerProcess(make)
    gate = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        gate.wait(30)
        got.append(per.get())

    askers = [threading.Thread(target=ask) for _ in range(8)]
    for t in askers:
        t.start()
    for t in askers:
        t.join(30)
    assert len(made) == 1
    assert got == [made[0]] * 8
