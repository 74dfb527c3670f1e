"""User mistakes: exit code 2 and one clear line on stderr, never a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from outspool.store import SCHEMA_VERSION
from tests.conftest import RunCli
from tests.helpers import CliResult


def assert_one_clear_line(result: CliResult, *words: str) -> str:
    assert result.rc == 2, result
    assert b"Traceback" not in result.stderr
    assert result.stdout == b""
    lines = result.err_lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("outspool: "), line
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.fixture
def existing_db(db: str, run_cli: RunCli) -> str:
    assert run_cli("run", "-q", "--db", db, "--", "true").rc == 0
    return db


@pytest.mark.parametrize("command", ["logs", "show"])
def test_unknown_id(existing_db: str, run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "nosuchexecution", "--db", existing_db)
    assert_one_clear_line(result, "nosuchexecution")


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("run", "--", "true"),
        ("logs", "someid"),
    ],
)
def test_unwritable_database_path(run_cli: RunCli, args: tuple[str, ...]) -> None:
    result = run_cli(args[0], "--db", "/proc/nope/x.db", *args[1:])
    assert_one_clear_line(result, "/proc/nope/x.db")


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "args", [("ls",), ("ls", "--json"), ("show", "someid"), ("logs", "someid"), ("logs", "-f", "x")]
)
def test_a_read_command_on_a_missing_database_creates_nothing(
    tmp_path: Path, run_cli: RunCli, args: tuple[str, ...]
) -> None:
    before = _tree(tmp_path)
    for db in (tmp_path / "nonexistent" / "dir" / "x.db", tmp_path / "x.db"):
        for given in (str(db), f"sqlite:///{db}"):
            result = run_cli(args[0], "--db", given, *args[1:])
            assert_one_clear_line(result, "no database at", str(db))
    assert _tree(tmp_path) == before


def test_a_read_command_on_an_empty_file_leaves_it_empty(tmp_path: Path, run_cli: RunCli) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    assert_one_clear_line(run_cli("ls", "--db", str(db)), "no database at", str(db))
    assert _tree(tmp_path) == ["empty.db"]
    assert db.stat().st_size == 0


def test_missing_command(db: str, run_cli: RunCli) -> None:
    assert_one_clear_line(run_cli("run", "--db", db), "COMMAND")
    assert_one_clear_line(run_cli("run", "--db", db, "--"), "COMMAND")


def test_command_not_found(db: str, run_cli: RunCli) -> None:
    result = run_cli("run", "--db", db, "--", "no-such-program-xyz")
    line = assert_one_clear_line(result, "no-such-program-xyz")
    assert line == "outspool: command not found: no-such-program-xyz"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("ls", "--bogus"), "--bogus"),
        (("run", "--timeout", "-1", "--", "true"), "--timeout"),
        (("run", "--timeout", "soon", "--", "true"), "--timeout"),
        (("logs", "x", "--stream", "both"), "--stream"),
        (("logs", "x", "--tail", "-2"), "--tail"),
        (("ls", "--status", "sleeping"), "--status"),
        (("ls", "--limit", "0"), "--limit"),
        (("run", "--language", "python"), "--code"),
        (("run", "--language", "cobol", "--code", "x"), "cobol"),
        (("run", "--language", "sh", "--code", "true", "--", "echo"), "COMMAND"),
        (("frobnicate",), "frobnicate"),
    ],
)
def test_bad_arguments(db: str, run_cli: RunCli, args: tuple[str, ...], word: str) -> None:
    assert_one_clear_line(run_cli(args[0], "--db", db, *args[1:]), word)


@pytest.mark.parametrize(
    ("variable", "value", "word"),
    [
        ("OUTSPOOL_FLUSH_INTERVAL", "soon", "flush_interval"),
        ("OUTSPOOL_MAX_BUFFER_SIZE", "-1", "max_buffer_size"),
        ("OUTSPOOL_PROGRESS_PATTERNS", '["(oops"]', "progress_patterns"),
        ("OUTSPOOL_NO_SUCH_SETTING", "1", "OUTSPOOL_NO_SUCH_SETTING"),
    ],
)
@pytest.mark.parametrize("args", [("ls",), ("run", "--", "true")])
def test_invalid_setting_in_environment(
    db: str, run_cli: RunCli, variable: str, value: str, word: str, args: tuple[str, ...]
) -> None:
    result = run_cli(args[0], "--db", db, *args[1:], env={variable: value})
    assert_one_clear_line(result, word)
    assert not Path(db).exists()  # refused at start, before touching anything


def test_garbage_database_file(db: str, run_cli: RunCli) -> None:
    Path(db).write_bytes(b"\x00garbage, not SQLite\xff" * 300)
    assert_one_clear_line(run_cli("ls", "--db", db), db, "not an outspool database")
    assert_one_clear_line(run_cli("run", "--db", db, "--", "true"), db)


def test_database_from_a_newer_version(existing_db: str, run_cli: RunCli) -> None:
    conn = sqlite3.connect(existing_db)
    try:
        with conn:
            conn.execute("UPDATE outspool_schema SET version = ?", (SCHEMA_VERSION + 1,))
    finally:
        conn.close()
    assert_one_clear_line(run_cli("ls", "--db", existing_db), "newer")


def test_a_database_locked_too_long_is_one_line_and_readers_still_read(
    existing_db: str, run_cli: RunCli
) -> None:
    holder = sqlite3.connect(existing_db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
        env = {"OUTSPOOL_BUSY_TIMEOUT": "0.2"}
        result = run_cli("run", "--db", existing_db, "--", "true", env=env)
        assert_one_clear_line(result, "locked")
        listing = run_cli("ls", "--db", existing_db, "--json", env=env)
        assert listing.rc == 0 and listing.stderr == b""  # reading needs no lock
    finally:
        holder.execute("ROLLBACK")
        holder.close()
