"""The library's lifecycle as a new user meets it: leaving ``with``, ``close()``,
cancelling an ``arun``, a command given as one string, a misspelt option."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status
from outspool.jobs import Job
from tests.helpers import alive, wait_until

#: Takes a moment and prints as it goes: leaving early would cut it short.
COUNTING = ["sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.05; done"]
#: Says it is up (with its pid), then runs until stopped.
FOREVER = ["sh", "-c", "echo up $$; exec sleep 300"]


def pid_of(spool: Outspool, execution_id: str) -> int:
    line = wait_until(lambda: spool.read(execution_id), message="the program to start")
    return int(line.split()[1])


def test_leaving_the_with_block_waits_for_started_programs(
    db_path: Path, settings: Settings
) -> None:
    with Outspool(str(db_path), settings) as spool:
        started = spool.start(COUNTING)
    with Outspool(str(db_path), settings) as spool:
        ex = spool.get(started.id)
        assert (ex.status, ex.exit_code) == (Status.SUCCEEDED, 0)
        assert spool.read(ex.id) == b"1\n2\n3\n4\n5\n"


def test_close_waits_for_started_programs(db_path: Path, settings: Settings) -> None:
    spool = Outspool(str(db_path), settings).open()
    started = spool.start(COUNTING)
    spool.close()
    with Outspool(str(db_path), settings) as again:
        assert again.get(started.id).status is Status.SUCCEEDED
        assert again.read(started.id) == b"1\n2\n3\n4\n5\n"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_leaving_the_with_block_by_an_exception_stops_started_programs(
    db_path: Path, settings: Settings, error: type[BaseException]
) -> None:
    with pytest.raises(error), Outspool(str(db_path), settings) as spool:
        started = spool.start(FOREVER)
        pid = pid_of(spool, started.id)
        raise error
    assert not alive(pid)
    with Outspool(str(db_path), settings) as spool:
        ex = spool.get(started.id)
        assert ex.status is Status.CANCELLED
        assert ex.reason is not None and error.__name__ in ex.reason
        assert spool.read(ex.id).startswith(b"up ")


def test_cancelling_the_task_awaiting_arun_stops_the_program(
    db_path: Path, settings: Settings
) -> None:
    found: dict[str, int] = {}

    async def main(spool: Outspool) -> None:
        task = asyncio.create_task(spool.arun(FOREVER, name="to cancel"))
        while not (listed := spool.list()) or not spool.read(listed[0].id):
            await asyncio.sleep(0.005)  # polling until the program is up
        found["pid"] = int(spool.read(listed[0].id).split()[1])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with Outspool(str(db_path), settings) as spool:
        runner = threading.Thread(target=asyncio.run, args=(main(spool),), daemon=True)
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "asyncio.run() did not return"
        (ex,) = spool.list()
        assert ex.status is Status.CANCELLED
        assert ex.reason is not None and "cancelled" in ex.reason
        assert not alive(found["pid"])


def test_a_command_given_as_one_string_is_refused_before_anything_runs(
    spool: Outspool,
) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        spool.run("echo hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of strings"):
        spool.submit("echo hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be strings"):
        spool.start(["echo", 1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Job(command="echo hello")  # type: ignore[arg-type]
    assert spool.list() == []


def test_a_misspelt_option_is_refused(spool: Outspool) -> None:
    with pytest.raises(TypeError, match="timeot"):
        spool.run(["true"], timeot=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="timeot"):
        spool.submit(["true"], timeot=3)  # type: ignore[call-arg]
    assert spool.list() == []


def test_a_job_value_runs_and_queues_the_same(spool: Outspool) -> None:
    job = Job(command=("sh", "-c", "echo $X"), env={"X": "same"}, name="job")
    ran = spool.run(job)
    queued = spool.submit(job)
    assert (ran.name, ran.env, ran.command) == (queued.name, queued.env, queued.command)
    assert spool.read(ran.id) == b"same\n"
    assert spool.run(job, name="renamed").name == "renamed"
