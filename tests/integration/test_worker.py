"""The queue and the worker with real worker processes, real programs, a real SQLite file."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status, limits
from outspool.jobs import Job
from outspool.watchdog import Watchdog
from tests.conftest import RunCli, SpawnCli
from tests.helpers import alive, wait_until

FAST = {"OUTSPOOL_KILL_GRACE": "0.5", "OUTSPOOL_DRAIN_GRACE": "0.5"}


def queue_jobs(db: str, jobs: list[Job]) -> list[str]:
    with Outspool(db) as spool:
        return [spool.submit(job).id for job in jobs]


def record(db: str, execution_id: str) -> dict[str, object]:
    with Outspool(db) as spool:
        return spool.get(execution_id).to_json()


def stored(db: str, execution_id: str) -> bytes:
    with Outspool(db) as spool:
        return spool.read(execution_id)


def wait_status(db: str, execution_id: str, *wanted: str) -> dict[str, object]:
    wait_until(
        lambda: record(db, execution_id)["status"] in wanted,
        message=f"{execution_id} to be {'/'.join(wanted)}",
    )
    return record(db, execution_id)


def wait_output(db: str, execution_id: str, needle: bytes) -> bytes:
    wait_until(
        lambda: needle in stored(db, execution_id),
        message=f"{needle!r} in the output of {execution_id}",
    )
    return stored(db, execution_id)


def test_four_workers_run_500_jobs_exactly_once(
    db_path: Path, tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    ledger = tmp_path / "ledger"
    ledger.touch()
    jobs = [
        Job(command=("sh", "-c", f'echo "$OUTSPOOL_EXECUTION_ID" >> {ledger}')) for _ in range(500)
    ]
    ids = queue_jobs(str(db_path), jobs)
    workers = [spawn_cli("worker", "--db", str(db_path), "--burst", "-c", "2") for _ in range(4)]
    for proc in workers:
        assert proc.wait(240) == 0

    runs = Counter(ledger.read_text().split())
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1
    with Outspool(str(db_path)) as spool:
        assert {ex.status for ex in spool.list(limit=1000)} == {Status.SUCCEEDED}
        assert len({ex.worker_id for ex in spool.list(limit=1000)}) > 1


def test_sigkill_of_worker_leaves_no_orphans_and_recovery_marks_lost(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    pids = tmp_path / "pids"
    script = (
        f"echo $$ > {pids}; sleep 300 & echo $! >> {pids}; "
        "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.01; done"
    )
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", script))])
    worker = spawn_cli("worker", "--db", db_url)
    before = wait_output(db_url, execution_id, b"line 20\n")
    wait_until(lambda: len(pids.read_text().split()) == 2, message="the program's pids")
    program, grandchild = (int(p) for p in pids.read_text().split())

    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    wait_until(lambda: not alive(program), message="the program to die with its worker")

    env = {"OUTSPOOL_HEARTBEAT_TIMEOUT": "0.2"}
    wait_until(
        lambda: execution_id.encode() in run_cli("recover", "--db", db_url, env=env).stdout,
        message="recover to mark it lost",
    )
    ex = record(db_url, execution_id)
    assert ex["status"] == "lost"
    assert "heartbeat" in str(ex["reason"])
    after = stored(db_url, execution_id)
    assert after.startswith(before)  # what was stored before the crash is intact
    wait_until(lambda: not alive(grandchild), message="recovery to kill the orphaned grandchild")
    if not db_url.startswith("postgresql"):
        with sqlite3.connect(db_url) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_sigkill_of_worker_kills_every_process_of_its_jobs_without_recovery(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    """The worker's watchdog, not ``recover``: a grandchild in the background and one in a
    session of its own with an empty environment (which recovery could not find) die with
    the worker, and the worker's cgroup is removed."""
    probe = Watchdog.start()
    if probe is None:
        pytest.skip("no writable cgroup here: jobs keep the per-job parent-death signal")
    probe.close()
    pids = tmp_path / "pids"
    script = (
        "sleep 300 & a=$!; setsid env -i sleep 301 & b=$!; "
        f"echo $$ $a $b > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    )
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", script))])
    worker = spawn_cli("worker", "--db", db_url)
    wait_until(pids.exists, message="the program's pids")
    left = [int(p) for p in pids.read_text().split()]
    groups = worker_cgroups(worker.pid)
    assert groups, "the worker made no cgroup of its own"
    try:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        wait_until(
            lambda: not any(alive(pid) for pid in left), message="every process of the job to die"
        )
        wait_until(lambda: not any(os.path.exists(g) for g in groups), message="the cgroup removed")
    finally:
        for pid in left:  # only if the assertion failed: do not leave them to the machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert record(db_url, execution_id)["status"] == "running"  # nobody recovered it


def worker_cgroups(pid: int) -> list[str]:
    """The cgroups worker ``pid`` made for its executions (named after its pid)."""
    found = []
    for parent in limits._parents():
        if parent is not None:
            found += glob.glob(os.path.join(parent, f"outspool-worker-{pid}-*"))
    return found


def test_sigterm_drains_running_jobs_and_claims_no_more(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    gate = tmp_path / "gate"
    slow = Job(
        command=(
            "sh",
            "-c",
            f"echo started; while [ ! -e {gate} ]; do sleep 0.01; done; echo finished",
        )
    )
    first, second = queue_jobs(db_url, [slow, Job(command=("echo", "never"))])
    worker = spawn_cli("worker", "--db", db_url, "-c", "1")
    wait_output(db_url, first, b"started\n")
    worker.send_signal(signal.SIGTERM)
    gate.touch()  # the running job may finish within the shutdown grace
    assert worker.wait(30) == 0
    assert record(db_url, first)["status"] == "succeeded"
    assert stored(db_url, first) == b"started\nfinished\n"
    assert record(db_url, second)["status"] == "queued"


def test_shutdown_grace_over_stops_running_jobs_as_cancelled(
    db_url: str, spawn_cli: SpawnCli
) -> None:
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", "echo up; sleep 300"))])
    env = {**FAST, "OUTSPOOL_SHUTDOWN_GRACE": "0.2"}
    worker = spawn_cli("worker", "--db", db_url, env=env)
    wait_output(db_url, execution_id, b"up\n")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    ex = record(db_url, execution_id)
    assert (ex["status"], ex["reason"]) == ("cancelled", "worker shutdown")
    assert stored(db_url, execution_id) == b"up\n"


IGNORES_TERM = "trap '' TERM; echo $$; while true; do sleep 0.05; done"


def test_timeout_kills_a_program_that_ignores_sigterm(db_url: str, run_cli: RunCli) -> None:
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", IGNORES_TERM), timeout=0.5)])
    assert run_cli("worker", "--db", db_url, "--burst", env=FAST).rc == 0
    ex = record(db_url, execution_id)
    assert ex["status"] == "timed_out"
    assert ex["signal"] == signal.SIGKILL
    assert not alive(int(stored(db_url, execution_id)))


def test_cancel_queued_and_running(db_url: str, spawn_cli: SpawnCli, run_cli: RunCli) -> None:
    running_id, queued_id = queue_jobs(
        db_url, [Job(command=("sh", "-c", IGNORES_TERM)), Job(command=("echo", "x"))]
    )
    assert run_cli("cancel", "--db", db_url, queued_id).rc == 0
    assert record(db_url, queued_id)["status"] == "cancelled"

    spawn_cli("worker", "--db", db_url, "-c", "1", env=FAST)
    pid = int(wait_output(db_url, running_id, b"\n"))
    done = run_cli("cancel", "--db", db_url, running_id)
    assert done.rc == 0, done.stderr
    ex = wait_status(db_url, running_id, "cancelled")
    assert ex["reason"] == "cancelled by request"
    wait_until(lambda: not alive(pid), message="the cancelled program to die")
    again = run_cli("cancel", "--db", db_url, running_id)
    assert again.err_lines == [f"outspool: execution {running_id} already ended: cancelled"]


def test_grandchild_holding_the_pipe_does_not_hang(
    db_url: str, tmp_path: Path, run_cli: RunCli
) -> None:
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo main done"
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", script))])
    assert run_cli("worker", "--db", db_url, "--burst", env=FAST, timeout=60).rc == 0
    ex = record(db_url, execution_id)
    assert ex["status"] == "succeeded"
    assert stored(db_url, execution_id) == b"main done\n"
    assert not alive(int(pid_file.read_text()))


def test_programs_get_a_clean_environment_and_a_fresh_directory(
    db_url: str, run_cli: RunCli
) -> None:
    code = (
        "import os; print(sorted(os.environ)); print(os.environ.get('GIVEN')); print(os.getcwd())"
    )
    (execution_id,) = queue_jobs(db_url, [Job(language="python", code=code, env={"GIVEN": "yes"})])
    env = {"SECRET_TOKEN": "hunter2", "PATH": os.environ["PATH"]}
    assert run_cli("worker", "--db", db_url, "--burst", env=env).rc == 0
    names, given, cwd = stored(db_url, execution_id).decode().splitlines()
    assert "SECRET_TOKEN" not in names
    assert "hunter2" not in stored(db_url, execution_id).decode()
    assert "'PATH'" in names
    assert given == "yes"
    assert "outspool-" in cwd
    assert not Path(cwd).exists()  # removed afterwards


def test_a_directory_left_full_is_removed_too(db_url: str, run_cli: RunCli) -> None:
    job = Job(command=("sh", "-c", "mkdir -p a/b && echo x > a/b/f && echo y > g && pwd"))
    (execution_id,) = queue_jobs(db_url, [job])
    assert run_cli("worker", "--db", db_url, "--burst").rc == 0
    cwd = stored(db_url, execution_id).decode().strip()
    assert "outspool-" in cwd
    assert not Path(cwd).exists()


def test_sandboxed_workers_default_to_four_slots_per_cpu(tmp_path: Path) -> None:
    from outspool.worker import Worker

    cpus = os.cpu_count() or 1
    db = str(tmp_path / "slots.db")
    assert Worker(db, Settings.load(sandbox="bwrap")).concurrency == 4 * cpus
    assert Worker(db, Settings.load(sandbox="none")).concurrency == cpus
    assert Worker(db, Settings.load(sandbox="bwrap"), concurrency=3).concurrency == 3


def test_resource_limits_apply_to_programs(db_url: str, run_cli: RunCli) -> None:
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    (execution_id,) = queue_jobs(db_url, [Job(language="python", code=code)])
    assert (
        run_cli("worker", "--db", db_url, "--burst", env={"OUTSPOOL_LIMIT_OPEN_FILES": "77"}).rc
        == 0
    )
    assert stored(db_url, execution_id) == b"77\n"


def test_unknown_language_is_refused_at_submit(db_url: str, run_cli: RunCli) -> None:
    done = run_cli("submit", "--db", db_url, "--language", "cobol", "--code", "x")
    assert done.rc == 2
    assert done.err_lines == ["outspool: unknown language 'cobol' (known: bash, node, python, sh)"]


def test_library_worker_runs_until_empty(
    db_url: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from outspool.worker import Worker

    ids = queue_jobs(db_url, [Job(command=("echo", str(i))) for i in range(5)])
    with caplog.at_level(logging.INFO, logger="outspool.worker"):
        Worker(db_url, settings, concurrency=2, burst=True).run()
    assert [stored(db_url, i) for i in ids] == [f"{i}\n".encode() for i in range(5)]
    lines = [r.getMessage() for r in caplog.records if r.name == "outspool.worker"]
    assert sum("succeeded" in line for line in lines) == 5


def test_submit_prints_an_id_that_a_worker_runs(db_url: str, run_cli: RunCli) -> None:
    done = run_cli(
        "submit", "--db", db_url, "--name", "hi", "--env", "A=1", "--", "sh", "-c", "echo $A"
    )
    assert done.rc == 0
    execution_id = done.stdout.decode().strip()
    assert record(db_url, execution_id)["status"] == "queued"
    assert run_cli("worker", "--db", db_url, "--burst").rc == 0
    assert stored(db_url, execution_id) == b"1\n"
    bad = run_cli("submit", "--db", db_url, "--env", "NOEQUALS", "--", "true")
    assert bad.rc == 2 and len(bad.err_lines) == 1


def test_bad_worker_flag_is_one_line(run_cli: RunCli, db_url: str) -> None:
    done = run_cli("worker", "--db", db_url, "--concurrency", "0")
    assert done.rc == 2
    assert len(done.err_lines) == 1
    assert b"Traceback" not in done.stderr


def test_a_program_running_outspool_accepts_the_execution_variable(
    db_url: str, run_cli: RunCli
) -> None:
    code = "from outspool import Settings; Settings.load(); print('ok')"
    (execution_id,) = queue_jobs(db_url, [Job(language="python", code=code)])
    assert run_cli("worker", "--db", db_url, "--burst").rc == 0
    assert stored(db_url, execution_id) == b"ok\n"


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_exit_codes_map_to_statuses(db_url: str, run_cli: RunCli, status: str) -> None:
    code = 0 if status == "succeeded" else 7
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", f"exit {code}"))])
    assert run_cli("worker", "--db", db_url, "--burst").rc == 0
    ex = record(db_url, execution_id)
    assert (ex["status"], ex["exit_code"]) == (status, code)


def test_library_queue_and_background_worker(db_url: str, settings: Settings) -> None:
    from outspool.worker import Worker

    with Outspool(db_url, settings) as spool:
        gate_free = spool.submit(language="python", code="print('ran')", name="lib")
        never = spool.submit(["sleep", "300"])
        assert spool.cancel(never.id).status is Status.CANCELLED
        worker = Worker(db_url, settings, concurrency=1).start()
        try:
            wait_until(lambda: spool.get(gate_free.id).status.finished, message="the job to end")
        finally:
            worker.stop()
            assert worker.join(60)
        assert spool.read(gate_free.id) == b"ran\n"
        assert spool.get(never.id).started_at is None  # a cancelled job never starts


def test_a_second_signal_stops_running_jobs_at_once(db_url: str, spawn_cli: SpawnCli) -> None:
    (execution_id,) = queue_jobs(db_url, [Job(command=("sh", "-c", IGNORES_TERM))])
    patient = {"OUTSPOOL_SHUTDOWN_GRACE": "600", "OUTSPOOL_KILL_GRACE": "600"}
    worker = spawn_cli("worker", "--db", db_url, env=patient)
    pid = int(wait_output(db_url, execution_id, b"\n"))
    worker.send_signal(signal.SIGTERM)  # drain: the job may run on for 10 minutes
    stderr = worker.stderr
    assert stderr is not None
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(stderr.readline, b"")))
    reader.start()
    # two signals close together are one to Unix: wait until the first was acted on
    wait_until(lambda: any(b"shutting down" in line for line in seen), message="draining")
    worker.send_signal(signal.SIGTERM)  # now: SIGKILL without waiting for any grace
    assert worker.wait(60) == 0
    ex = record(db_url, execution_id)
    assert (ex["status"], ex["reason"], ex["signal"]) == ("cancelled", "worker shutdown", 9)
    assert not alive(pid)
    reader.join(30)


def test_a_follower_ends_when_the_capturing_process_dies(
    db_path: Path, spawn_cli: SpawnCli
) -> None:
    script = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.02; done"
    capturer = spawn_cli(
        "run", "--quiet", "--db", str(db_path), "--", "sh", "-c", script,
        env={"OUTSPOOL_HEARTBEAT_INTERVAL": "0.1"},
    )  # fmt: skip
    assert capturer.stderr is not None
    execution_id = capturer.stderr.readline().decode().split()[-1]
    wait_output(str(db_path), execution_id, b"tick 5\n")
    follower = spawn_cli(
        "logs", execution_id, "--db", str(db_path), "--follow", "--raw",
        env={"OUTSPOOL_HEARTBEAT_TIMEOUT": "2"},
    )  # fmt: skip
    capturer.send_signal(signal.SIGKILL)
    out, _ = follower.communicate(timeout=60)  # ends by itself: recovery marks it lost
    assert follower.returncode == 0
    assert record(str(db_path), execution_id)["status"] == "lost"
    assert out == stored(str(db_path), execution_id)


def test_a_worker_raises_its_open_files_limit_to_the_hard_limit() -> None:
    """Six descriptors per running program: a soft limit of 1,024 would cap a worker near
    170 programs (bench/scale/live_many.py runs 1,000)."""
    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))\n"
        "from outspool.worker import raise_open_files_limit\n"
        "raise_open_files_limit()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    soft, hard = map(int, done.stdout.split())
    assert soft == hard


def _threads_of_this_process() -> int:
    return len(os.listdir("/proc/self/task"))  # every thread, not only Python's


#: Threads a worker has whatever it runs, beyond its start-and-end pool: the capture loop,
#: the writer, the heartbeat, SQLite's checkpointer, a PostgreSQL pool's own workers.
FIXED_THREADS = 16


def test_a_worker_holds_no_thread_per_running_program(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """60 programs run at once in one worker: its threads stay a fixed few (the capture
    loop, the writer, the start-and-end pool...), not one per program."""
    from outspool.client import HANDLERS
    from outspool.worker import Worker

    go = tmp_path / "go"
    waits = f"echo up; while [ ! -e {go} ]; do sleep 0.01; done; echo done"
    before = _threads_of_this_process()
    with Outspool(db_url, settings) as spool:
        ids = [spool.submit(["sh", "-c", waits]).id for _ in range(60)]
        worker = Worker(db_url, settings, concurrency=60).start()
        try:
            wait_until(lambda: all(spool.read(i) == b"up\n" for i in ids), message="all up")
            running = _threads_of_this_process() - before
            go.touch()
            wait_until(lambda: all(spool.get(i).status.finished for i in ids), message="all end")
        finally:
            worker.stop()
            assert worker.join(60)
        outputs = [(spool.get(i).status, spool.read(i)) for i in ids]
    assert running <= HANDLERS + FIXED_THREADS < 60, running  # before: 60 + the fixed ones
    assert outputs == [(Status.SUCCEEDED, b"up\ndone\n")] * 60
