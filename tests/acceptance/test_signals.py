"""Signals to ``outspool run``: the program is stopped and the execution ends cancelled."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from outspool import Outspool, Status
from tests.conftest import RunCli, SpawnCli
from tests.helpers import CLI, Lines, cli_env, wait_until


def execution_id(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line.startswith("outspool: execution "), line
    return line.split()[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_program_and_cancels(
    db_path: Path, spawn_cli: SpawnCli, run_cli: RunCli, sig: signal.Signals
) -> None:
    db = str(db_path)
    run = spawn_cli("run", "--db", db, "--", "sh", "-c", "echo ready; exec sleep 60")
    ex_id = execution_id(run)
    out = Lines(run)
    wait_until(lambda: out.has(b"ready\n"), message="the program's first line")
    run.send_signal(sig)
    assert run.wait(30) == 128 + sig
    shown = json.loads(run_cli("show", ex_id, "--db", db, "--json").stdout)
    assert shown["status"] == "cancelled"
    assert shown["signal"] == signal.SIGTERM  # the program got SIGTERM from outspool
    assert signal.Signals(sig).name in shown["reason"]


def test_second_sigint_kills_at_once(db_path: Path, spawn_cli: SpawnCli, run_cli: RunCli) -> None:
    """The program ignores SIGTERM and the grace is long: only the second ^C ends it."""
    db = str(db_path)
    script = "trap 'echo term ignored' TERM; echo ready; while :; do sleep 0.05; done"
    run = spawn_cli("run", "--db", db, "--", "sh", "-c", script, env={"OUTSPOOL_KILL_GRACE": "600"})
    ex_id = execution_id(run)
    out = Lines(run)
    wait_until(lambda: out.has(b"ready\n"), message="the program's first line")
    run.send_signal(signal.SIGINT)
    wait_until(lambda: out.has(b"term ignored\n"), message="SIGTERM reached the program")
    assert run.poll() is None
    run.send_signal(signal.SIGINT)
    assert run.wait(30) == 130
    shown = json.loads(run_cli("show", ex_id, "--db", db, "--json").stdout)
    assert (shown["status"], shown["signal"]) == ("cancelled", signal.SIGKILL)


def test_a_reader_that_goes_away_sends_sigpipe_as_a_shell_would(db_path: Path) -> None:
    """`outspool run -- yes | head -1` ends like `yes | head -1`, and keeps what was printed."""
    shell = f'{" ".join(CLI)} run --db {db_path} -- yes | head -1; echo "rc=${{PIPESTATUS[0]}}"'
    done = subprocess.run(
        ["bash", "-c", shell], capture_output=True, timeout=60, env=cli_env(), check=False
    )
    assert done.stdout.splitlines() == [b"y", b"rc=141"]
    with Outspool(str(db_path)) as spool:
        (ex,) = spool.list()
        assert (ex.status, ex.signal) == (Status.FAILED, signal.SIGPIPE)
        assert ex.stdout_size > 0
        assert set(spool.read(ex.id).split(b"\n")) <= {b"y", b""}
