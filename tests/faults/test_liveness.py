"""A late heartbeat never kills a healthy run; a dead capturing process is still noticed."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from outspool import Outspool, Status
from outspool.liveness import Liveness, check, identity
from outspool.store.postgres import PostgresStore
from tests.conftest import RunCli, SpawnCli
from tests.helpers import CLI, alive, capture_then_kill_it, cli_env, wait_until
from tests.postgres.database import fresh_schema

#: The capturing process heartbeats once, at registration, and never again: as late as
#: a heartbeat blocked behind another process's write lock or a full disk.
SILENT = {"OUTSPOOL_HEARTBEAT_INTERVAL": "3600"}
#: The recoverer (or follower) considers a heartbeat older than half a second stale.
IMPATIENT = {"OUTSPOOL_HEARTBEAT_TIMEOUT": "0.5"}
#: The heartbeat timeout of a recoverer that cannot ask the kernel: only the age speaks.
STALE = 2.0


def gated(gate: Path, lines: int = 3) -> list[str]:
    """A program that prints ``lines`` lines, waits for ``gate``, prints as many more."""
    first = " ".join(f"echo line {i};" for i in range(lines))
    then = " ".join(f"echo line {i};" for i in range(lines, 2 * lines))
    return ["sh", "-c", f"{first} while [ ! -e {gate} ]; do sleep 0.01; done; {then}"]


def execution_of(db: str) -> str:
    def running() -> str | None:
        with Outspool(db) as spool:
            found = spool.list(status=Status.RUNNING)
        return found[0].id if found else None

    return wait_until(running, message="a running execution")


def scalar(conn: psycopg.Connection[Any], query: str, *params: object) -> Any:
    """The one value of the one row ``query`` returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def stale(db: str, execution_id: str) -> bool:
    with Outspool(db) as spool:
        return any(
            lost.execution_id == execution_id for lost in spool.store.find_lost(time.time() - 0.5)
        )


def test_identity_names_one_live_process_and_no_other() -> None:
    mine = identity()
    assert mine is not None
    assert check(mine) is Liveness.ALIVE
    space, pid, ticks = mine.rsplit(":", 2)
    assert check(f"{space}:{pid}:{int(ticks) + 1}") is Liveness.DEAD  # its PID, reused
    assert check(f"another-boot:1:{pid}:{ticks}") is Liveness.UNKNOWN  # another machine
    assert check(None) is Liveness.UNKNOWN
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = identity(child.pid)
    wait_until(lambda: check(recorded) is Liveness.DEAD, message="the exited child, a zombie")
    child.wait()
    assert check(recorded) is Liveness.DEAD


def test_a_late_heartbeat_of_a_live_capture_is_not_lost(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    gate = tmp_path / "gate"
    run = spawn_cli("run", "--db", db_url, "--", *gated(gate), env=SILENT)
    execution_id = execution_of(db_url)
    follower = spawn_cli("logs", "--db", db_url, "--follow", execution_id, env=IMPATIENT)
    wait_until(lambda: stale(db_url, execution_id), message="the heartbeat to be late")
    recovered = run_cli("recover", "--db", db_url, env=IMPATIENT)
    assert recovered.rc == 0
    assert execution_id.encode() not in recovered.stdout
    with Outspool(db_url) as spool:
        assert spool.get(execution_id).status is Status.RUNNING
    gate.touch()
    assert run.wait(60) == 0  # the program was not killed
    assert follower.wait(60) == 0
    assert follower.stdout is not None
    assert follower.stdout.read() == b"".join(b"line %d\n" % i for i in range(6))
    with Outspool(db_url) as spool:
        assert spool.get(execution_id).status is Status.SUCCEEDED


def test_a_capture_marked_lost_while_alive_restores_it(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    gate = tmp_path / "gate"
    env = {"OUTSPOOL_HEARTBEAT_INTERVAL": "0.1"}
    run = spawn_cli("run", "--db", db_url, "--", *gated(gate), env=env)
    execution_id = execution_of(db_url)
    with Outspool(db_url) as spool:  # as a recoverer on another machine would
        assert spool.store.mark_lost(execution_id, time.time(), "heartbeat late elsewhere")

        def restored() -> bool:
            return spool.get(execution_id).status is Status.RUNNING

        wait_until(restored, message="the live capture to restore it")
    gate.touch()
    assert run.wait(60) == 0
    with Outspool(db_url) as spool:
        final = spool.get(execution_id)
        assert final.status is Status.SUCCEEDED
        assert spool.read(execution_id) == b"".join(b"line %d\n" % i for i in range(6))


def test_a_dead_capture_is_lost_and_its_orphans_killed(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; echo started; wait"
    run = spawn_cli("run", "--db", db_url, "--", "sh", "-c", script, env=SILENT)
    execution_id = execution_of(db_url)
    wait_until(lambda: pids.exists() and pids.read_text().strip(), message="the grandchild's pid")
    grandchild = int(pids.read_text())
    run.send_signal(signal.SIGKILL)
    run.wait(30)
    wait_until(
        lambda: execution_id.encode() in run_cli("recover", "--db", db_url, env=IMPATIENT).stdout,
        message="recovery to mark it lost once its heartbeat is late",
    )
    with Outspool(db_url) as spool:
        ex = spool.get(execution_id)
    assert ex.status is Status.LOST
    assert "is gone" in (ex.reason or "")
    wait_until(lambda: not alive(grandchild), message="the orphan to be killed")


def test_serve_alone_notices_a_dead_capture_and_kills_nothing(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    serve = spawn_cli("serve", "--db", db_url, "--port", "0", env=IMPATIENT)
    assert serve.stderr is not None
    found = re.search(r"at (http://[\d.]+:\d+/)", serve.stderr.readline().decode())
    assert found
    execution_id, grandchild = capture_then_kill_it(db_url, tmp_path, spawn_cli)

    def status() -> str:
        url = f"{found.group(1)}api/executions/{execution_id}"
        return str(httpx.get(url, timeout=30).json()["status"])

    wait_until(lambda: status() == "lost", message="serve to mark it lost")
    assert alive(grandchild), "serve marks lost executions but never kills"
    assert run_cli("recover", "--db", db_url).rc == 0
    wait_until(lambda: not alive(grandchild), message="recover to kill the leftover")


def test_a_write_lock_held_past_the_heartbeat_timeout_kills_nothing(
    db_path: Path, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    """The issue's reproduction: another process holds SQLite's write lock well past the
    heartbeat timeout during a run; recover and a follower run meanwhile. Nothing is
    marked lost, nothing is killed, the follower gets every line."""
    db = str(db_path)
    gate = tmp_path / "gate"
    quick = {"OUTSPOOL_HEARTBEAT_INTERVAL": "0.1", "OUTSPOOL_BUSY_TIMEOUT": "0.5"}
    run = spawn_cli("run", "--db", db, "--", *gated(gate), env=quick)
    execution_id = execution_of(db)
    follower = spawn_cli("logs", "--db", db, "--follow", execution_id, env=IMPATIENT)
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # as a long transaction of another program would
        wait_until(lambda: stale(db, execution_id), message="the heartbeat to be late")
        recovered = run_cli("recover", "--db", db, env={**IMPATIENT, **quick})
        assert recovered.rc == 0, recovered.stderr
        assert execution_id.encode() not in recovered.stdout
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert run_cli("recover", "--db", db, env=IMPATIENT).rc == 0
    gate.touch()
    assert run.wait(60) == 0
    assert follower.wait(60) == 0
    assert follower.stdout is not None
    assert follower.stdout.read() == b"".join(b"line %d\n" % i for i in range(6))
    with Outspool(db) as spool:
        assert spool.get(execution_id).status is Status.SUCCEEDED


@pytest.mark.postgres
def test_a_lock_that_stalls_the_writer_never_delays_the_heartbeat(
    tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    """PostgreSQL: another connection holds every lock on the executions and chunk tables
    well past the heartbeat timeout while a run has output to commit. Its writer waits;
    its heartbeat, on a connection of its own where no statement waits long for a lock,
    goes on; so a recoverer that cannot ask the kernel (another PID namespace, as
    another host) does not mark the run lost once the lock is gone, and nothing is lost."""
    with fresh_schema() as url:
        gate = tmp_path / "gate"
        quick = {"OUTSPOOL_HEARTBEAT_INTERVAL": "0.1"}
        run = spawn_cli("run", "--db", url, "--", *gated(gate), env=quick)
        execution_id = execution_of(url)
        store = PostgresStore(url)
        with (
            contextlib.closing(store.connect()) as look,
            contextlib.closing(store.connect()) as lock,
        ):
            worker = scalar(look, "SELECT worker_id FROM executions WHERE id = %s", execution_id)
            # the start (which names worker_id, like the heartbeat's looks) rides a group
            # commit of its own: once it is in, what waits for the lock is the output
            wait_until(
                lambda: scalar(look, "SELECT pid FROM executions WHERE id = %s", execution_id),
                message="the start to be committed",
            )

            def lock_both() -> bool:
                """Both tables, or neither: a writer in the middle of a commit holds one and
                wants the other, so waiting for the second while holding the first would be
                a deadlock, which the server breaks by failing this test's statement."""
                lock.execute("BEGIN")
                try:
                    lock.execute(
                        "LOCK TABLE executions, execution_output_chunks"
                        " IN ACCESS EXCLUSIVE MODE NOWAIT"
                    )
                except psycopg.errors.LockNotAvailable:
                    lock.execute("ROLLBACK")
                    return False
                return True

            wait_until(lock_both, message="both tables to be locked")
            taken = time.time()
            gate.touch()  # the rest of the output, and the end, wait for the lock

            def waiting(query: str) -> bool:
                """Whether a session running ``query`` (a LIKE pattern) waits for the lock:
                not the heartbeat's own looks, which name its worker_id and give up after
                lock_timeout."""
                return bool(
                    scalar(
                        look,
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE %s = ANY(pg_blocking_pids(pid)) AND query LIKE %s "
                        "AND query NOT LIKE %s",
                        lock.info.backend_pid,
                        query,
                        "%worker_id = %",
                    )
                )

            # the capture waits, in whichever statement it reached
            wait_until(lambda: waiting("%"), message="the capture to wait for the lock")
            wait_until(
                lambda: (
                    scalar(look, "SELECT heartbeat_at FROM workers WHERE id = %s", worker)
                    > taken + 2 * STALE
                ),
                message="the heartbeat to go on past the timeout while the lock is held",
            )
            elsewhere = subprocess.Popen(  # blocks on the lock, then looks
                ["unshare", "--pid", "--fork", "--mount-proc", *CLI, "recover", "--db", url],
                env=cli_env({"OUTSPOOL_HEARTBEAT_TIMEOUT": str(STALE)}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            wait_until(
                lambda: waiting("%LEFT JOIN workers%"), message="recover to wait for the lock too"
            )
            lock.execute("ROLLBACK")
        out, err = elsewhere.communicate(timeout=60)
        assert elsewhere.returncode == 0, err
        assert execution_id.encode() not in out
        assert run.wait(60) == 0
        with Outspool(url) as spool:
            assert spool.get(execution_id).status is Status.SUCCEEDED
            assert spool.read(execution_id) == b"".join(b"line %d\n" % i for i in range(6))
