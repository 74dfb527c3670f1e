"""The execution threads: a task never waits for another, threads are kept and reused."""

from __future__ import annotations

import functools
import os
import threading

from outspool import threads
from outspool.threads import PerProcess, Threads
from tests.helpers import wait_until


def test_a_task_never_waits_for_a_busy_thread() -> None:
    pool = Threads()
    release, second_ran = threading.Event(), threading.Event()
    pool.run(lambda: release.wait(30))
    pool.run(second_ran.set)
    assert second_ran.wait(30), "the second task waited for the first"
    release.set()


def test_an_idle_thread_takes_the_next_task() -> None:
    pool = Threads()
    ran_on: list[int] = []
    done = threading.Event()

    def record() -> None:
        ran_on.append(threading.get_ident())
        if len(ran_on) == 2:
            done.set()

    pool.run(record)
    wait_until(lambda: pool.idle == 1, message="the thread waits for work")
    pool.run(record)
    assert done.wait(30)
    assert ran_on[0] == ran_on[1]
    assert pool.idle in (0, 1)  # it took the task (and may be idle again)


def test_an_idle_thread_ends_after_its_idle_time() -> None:
    pool = Threads(idle=0.01)
    started: list[threading.Thread] = []
    pool.run(lambda: started.append(threading.current_thread()))
    wait_until(lambda: started and not started[0].is_alive(), message="the idle thread ends")
    assert pool.idle == 0
    done = threading.Event()
    pool.run(done.set)  # a new thread is started for the next task
    assert done.wait(30)


def test_many_tasks_at_once_each_run_once() -> None:
    pool = Threads()
    gate = threading.Barrier(21)
    counts = [0] * 20
    lock = threading.Lock()

    def task(i: int) -> None:
        gate.wait(30)  # all 20 run at the same time: 20 threads
        with lock:
            counts[i] += 1

    for i in range(20):
        pool.run(functools.partial(task, i))
    gate.wait(30)
    wait_until(lambda: sum(counts) == 20, message="every task ran")
    assert counts == [1] * 20


def test_one_per_process() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(os.getpid())
        return len(made)

    per = PerProcess(make)
    assert per.get() == per.get() == 1
    assert threads.shared() is threads.shared()
