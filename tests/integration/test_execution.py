"""A program's life under capture: progress, live Python output, pty, timeouts, stray children."""

from __future__ import annotations

import json
import os
import signal
import sys
from functools import partial
from pathlib import Path

import pytest

from outspool import Outspool, Running, Settings, Status, Stream
from tests.conftest import RunCli
from tests.helpers import alive, wait_until

TQDM = r"""
import sys, time
for i in range(0, 101, 10):
    bar = "#" * (i // 10)
    sys.stderr.write(f"\r{i:3d}%|{bar:<10}| {i}/100 [00:0{i // 50}<00:00]")
    sys.stderr.flush()
sys.stderr.write("\n")
print("finished training")
"""


def test_progress_from_a_carriage_return_bar(spool: Outspool) -> None:
    ex = spool.run([sys.executable, "-c", TQDM])
    assert ex.status is Status.SUCCEEDED
    assert ex.progress == "100%|##########| 100/100 [00:02<00:00]"
    assert ex.progress_percent == 100.0
    assert spool.read(ex.id, Stream.STDOUT) == b"finished training\n"
    assert spool.read(ex.id, Stream.STDERR).count(b"\r") == 11  # stored as printed


def test_progress_of_a_running_execution_is_stored_live(
    spool: Outspool, handles: list[Running], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    child = (
        "import os, sys, time\n"
        "print('step 3 of 10', flush=True)\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.002)\n"
    )
    handle = spool.start([sys.executable, "-c", child, str(go)])
    handles.append(handle)
    wait_until(lambda: spool.get(handle.id).progress == "step 3 of 10", message="progress")
    go.touch()
    assert handle.wait(60).status is Status.SUCCEEDED


def test_python_child_is_unbuffered_by_default(
    spool: Outspool, handles: list[Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """print() without flush shows while the program still runs (a pipe would block-buffer)."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    go = tmp_path / "go"
    child = (
        "import os, sys, time\n"
        "print('hello from a pipe', os.environ.get('PYTHONUNBUFFERED'))\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.002)\n"
    )
    handle = spool.start([sys.executable, "-c", child, str(go)])
    handles.append(handle)
    wait_until(lambda: spool.read(handle.id) == b"hello from a pipe 1\n", message="live print")
    go.touch()
    assert handle.wait(60).status is Status.SUCCEEDED


def test_pythonunbuffered_setting_off(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    monkeypatch.setenv("OUTSPOOL_PYTHONUNBUFFERED", "0")
    with Outspool(str(db_path), Settings.load()) as spool:
        ex = spool.run(
            [sys.executable, "-c", "import os; print(os.environ.get('PYTHONUNBUFFERED'))"]
        )
        assert spool.read(ex.id) == b"None\n"


def test_pty_merges_streams_and_is_a_terminal(spool: Outspool) -> None:
    child = (
        "import sys\n"
        "print('tty', sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty())\n"
        "print('to stderr', file=sys.stderr)\n"
    )
    ex = spool.run([sys.executable, "-c", child], pty=True)
    assert ex.status is Status.SUCCEEDED
    assert ex.pty is True
    out = spool.read(ex.id, Stream.STDOUT)
    assert out.replace(b"\r\n", b"\n") == b"tty True True True\nto stderr\n"
    assert spool.read(ex.id, Stream.STDERR) == b""
    assert ex.stderr_size == 0


def test_timeout_stops_the_program(spool: Outspool) -> None:
    ex = spool.run(["sleep", "60"], timeout=0.3)
    assert ex.status is Status.TIMED_OUT
    assert ex.signal == signal.SIGTERM
    assert ex.reason == "timeout"


def test_timeout_through_the_cli_exits_124(db_path: Path, run_cli: RunCli) -> None:
    result = run_cli("run", "--db", str(db_path), "--timeout", "0.3", "--", "sleep", "60")
    assert result.rc == 124
    ex_id = result.err_lines[0].split()[-1]
    shown = json.loads(run_cli("show", ex_id, "--db", str(db_path), "--json").stdout)
    assert shown["status"] == "timed_out"


def test_program_ignoring_sigterm_is_killed_after_kill_grace(
    db_path: Path, run_cli: RunCli
) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 1; done"
    result = run_cli(
        "run", "--db", str(db_path), "--timeout", "2", "--", "sh", "-c", script,
        env={"OUTSPOOL_KILL_GRACE": "0.2"},
    )  # fmt: skip
    assert result.rc == 124
    assert result.stdout == b"ready\n"
    ex_id = result.err_lines[0].split()[-1]
    shown = json.loads(run_cli("show", ex_id, "--db", str(db_path), "--json").stdout)
    assert shown["status"] == "timed_out"
    assert shown["signal"] == signal.SIGKILL


def test_grandchild_holding_the_pipe_does_not_hang(tmp_path: Path, run_cli: RunCli) -> None:
    db = str(tmp_path / "drain.db")
    result = run_cli(
        "run", "--db", db, "--", "sh", "-c", "sleep 300 & echo $!; echo parent done",
        env={"OUTSPOOL_DRAIN_GRACE": "0.2"},
    )  # fmt: skip
    assert result.rc == 0
    grandchild, last = result.stdout.decode().splitlines()
    assert last == "parent done"
    wait_until(lambda: not alive(int(grandchild)), message="grandchild killed with the group")
    ex_id = result.err_lines[0].split()[-1]
    with Outspool(db) as spool:
        assert spool.get(ex_id).status is Status.SUCCEEDED
        assert spool.read(ex_id).endswith(b"parent done\n")


def test_cancel_a_running_execution(spool: Outspool, handles: list[Running]) -> None:
    handle = spool.start(["sh", "-c", "echo started; exec sleep 60"])
    handles.append(handle)
    wait_until(lambda: spool.read(handle.id) == b"started\n", message="started")
    handle.cancel("enough")
    ex = handle.wait(60)
    assert ex.status is Status.CANCELLED
    assert ex.reason == "enough"


def _printed(handle: Running, needle: bytes) -> bool:
    return needle in handle.output()


def test_programs_started_in_the_library_hold_no_thread_each(
    spool: Outspool, tmp_path: Path
) -> None:
    """``Outspool.start`` of 40 programs: each is read by the capture loop and started and
    ended on a small pool, so the threads do not grow with the programs; every one ends
    ``succeeded`` with its output."""
    from outspool.client import HANDLERS

    go = tmp_path / "go"
    waits = f"echo up; while [ ! -e {go} ]; do sleep 0.01; done; echo done"
    before = len(os.listdir("/proc/self/task"))
    handles = [spool.start(["sh", "-c", waits]) for _ in range(40)]
    for handle in handles:
        wait_until(partial(_printed, handle, b"up\n"), message="the program to start")
    running = len(os.listdir("/proc/self/task")) - before
    go.touch()
    ended = [handle.wait(60) for handle in handles]
    # a thread per program would be 40 more; the rest are the pool's 16 and the store's own,
    # some started on first use (PostgreSQL: the connection pool's workers, the listener)
    assert running <= HANDLERS + 12, running
    assert {(ex.status, spool.read(ex.id)) for ex in ended} == {(Status.SUCCEEDED, b"up\ndone\n")}
    assert all(handle.join(0) for handle in handles)
