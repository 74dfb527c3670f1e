"""The command line as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import RunCli

ID_LINE = re.compile(r"^outspool: execution ([0-9a-z]{16})$")
SHOW_FIELDS = {
    "id",
    "status",
    "exit_code",
    "command",
    "started_at",
    "finished_at",
    "last_output_at",
    "stdout_size",
    "stderr_size",
    "output_truncated",
    "progress",
}


def run_id(err_lines: list[str]) -> str:
    found = ID_LINE.match(err_lines[0])
    assert found, err_lines
    return found.group(1)


def test_run_echoes_both_streams_and_passes_the_exit_code(db: str, run_cli: RunCli) -> None:
    result = run_cli(
        "run", "--db", db, "--", "sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2; exit 7"
    )
    assert result.rc == 7
    assert result.stdout == b"out\n"
    assert result.err_lines[1:] == ["err"]
    ex_id = run_id(result.err_lines)
    shown = json.loads(run_cli("show", ex_id, "--db", db, "--json").stdout)
    assert (shown["status"], shown["exit_code"]) == ("failed", 7)


@pytest.mark.parametrize("sig", [9, 15])
def test_killed_by_a_signal_exits_128_plus_n(db: str, run_cli: RunCli, sig: int) -> None:
    result = run_cli("run", "--db", db, "--", "sh", "-c", f"kill -{sig} $$")
    assert result.rc == 128 + sig
    shown = json.loads(run_cli("show", run_id(result.err_lines), "--db", db, "--json").stdout)
    assert (shown["status"], shown["signal"], shown["exit_code"]) == ("failed", sig, None)


def test_quiet_run_captures_without_echo(db: str, run_cli: RunCli) -> None:
    result = run_cli("run", "-q", "--db", db, "--", "echo", "hidden")
    assert (result.rc, result.stdout) == (0, b"")
    logs = run_cli("logs", run_id(result.err_lines), "--db", db)
    assert logs.stdout == b"hidden\n"


def test_run_takes_env_and_cwd_as_submit_does(db: str, run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(
        "run", "--db", db, "--env", "GREETING=hi", "--cwd", str(tmp_path),
        "--", "sh", "-c", "echo $GREETING; pwd",
    )  # fmt: skip
    assert (result.rc, result.stdout) == (0, f"hi\n{tmp_path}\n".encode())
    shown = json.loads(run_cli("show", run_id(result.err_lines), "--db", db, "--json").stdout)
    assert shown["cwd"] == str(tmp_path)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "import sys; print(6 * 7); print('e', file=sys.stderr)"),
        ("sh", "echo 42; echo e >&2"),
    ],
)
def test_run_language_and_code(db: str, run_cli: RunCli, language: str, code: str) -> None:
    result = run_cli("run", "--db", db, "--language", language, "--code", code)
    assert result.rc == 0
    assert result.stdout == b"42\n"
    shown = json.loads(run_cli("show", run_id(result.err_lines), "--db", db, "--json").stdout)
    assert shown["status"] == "succeeded"
    assert (shown["stdout_size"], shown["stderr_size"]) == (3, 2)
    if language == "python":
        assert shown["command"][0] == sys.executable


def test_db_from_environment_and_url_form(tmp_path: Path, run_cli: RunCli) -> None:
    env = {"OUTSPOOL_DB": f"sqlite:///{tmp_path}/env.db"}
    result = run_cli("run", "-q", "--", "echo", "via env", env=env)
    assert result.rc == 0
    assert (tmp_path / "env.db").exists()
    logs = run_cli("logs", run_id(result.err_lines), env=env)
    assert logs.stdout == b"via env\n"


BINARY = (
    "import os; os.write(1, b'a\\xff\\n' + bytes(range(3)) + b'\\n'); os.write(2, b'E1\\nE2\\n')"
)


@pytest.fixture
def binary_run(db: str, run_cli: RunCli) -> str:
    result = run_cli("run", "-q", "--db", db, "--", sys.executable, "-c", BINARY)
    assert result.rc == 0
    return run_id(result.err_lines)


def test_logs_streams(db: str, run_cli: RunCli, binary_run: str) -> None:
    def logs(*args: str) -> bytes:
        result = run_cli("logs", binary_run, "--db", db, *args)
        assert result.rc == 0, result.stderr
        return result.stdout

    assert logs("--stream", "stdout", "--raw") == b"a\xff\n\x00\x01\x02\n"
    assert logs("--stream", "stderr") == b"E1\nE2\n"
    assert logs("--raw") == b"a\xff\n\x00\x01\x02\nE1\nE2\n"
    assert logs() == "a\ufffd\n".encode() + b"\x00\x01\x02\nE1\nE2\n"  # text: UTF-8, replaced
    assert logs("--tail", "1") == b"E2\n"
    assert logs("--tail", "3", "--raw") == b"\x00\x01\x02\nE1\nE2\n"
    assert logs("--tail", "1", "--stream", "stdout", "--raw") == b"\x00\x01\x02\n"
    assert logs("--tail", "0") == b""
    assert logs("--stream", "all") == logs()


def test_logs_by_unique_prefix(db: str, run_cli: RunCli, binary_run: str) -> None:
    result = run_cli("logs", binary_run[:12], "--db", db, "--stream", "stderr")
    assert result.stdout == b"E1\nE2\n"


def test_show_json_has_the_documented_fields(db: str, run_cli: RunCli, binary_run: str) -> None:
    result = run_cli("show", binary_run, "--db", db, "--json")
    assert result.rc == 0
    shown = json.loads(result.stdout)
    assert set(shown) >= SHOW_FIELDS
    assert shown["id"] == binary_run
    assert shown["status"] == "succeeded"
    assert shown["exit_code"] == 0
    assert shown["command"] == [sys.executable, "-c", BINARY]
    assert (shown["stdout_size"], shown["stderr_size"]) == (7, 6)
    assert shown["output_truncated"] is False
    for stamp in ("started_at", "finished_at", "last_output_at"):
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", shown[stamp]), stamp
    assert shown["started_at"] <= shown["last_output_at"] <= shown["finished_at"]
    plain = run_cli("show", binary_run, "--db", db)
    assert plain.rc == 0
    assert binary_run in plain.stdout.decode()


def test_ls_json_status_and_limit(db: str, run_cli: RunCli) -> None:
    codes = [0, 1, 0, 3, 0]
    ids = []
    for code in codes:
        result = run_cli("run", "-q", "--db", db, "--", "sh", "-c", f"exit {code}")
        assert result.rc == code
        ids.append(run_id(result.err_lines))

    def ls(*args: str) -> list[str]:
        result = run_cli("ls", "--db", db, "--json", *args)
        assert result.rc == 0
        return [ex["id"] for ex in json.loads(result.stdout)]

    assert ls() == ids[::-1]  # newest first
    assert ls("--limit", "2") == ids[:-3:-1] == ls("-n", "2")  # -n as in logs -n, docker ps -n
    assert ls("--status", "failed") == [ids[3], ids[1]]
    assert ls("--status", "succeeded", "--limit", "1") == [ids[4]]
    assert ls("--status", "timed_out") == []
    table = run_cli("ls", "--db", db)
    assert table.rc == 0
    assert len(table.stdout.decode().splitlines()) == 1 + len(codes)


def test_version(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.rc == 0
    assert result.stdout.decode().startswith("outspool")
