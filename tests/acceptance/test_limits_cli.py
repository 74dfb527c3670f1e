"""Output limits on the command line: --max-output, the marker line, --raw, show --json."""

from __future__ import annotations

import json

from tests.acceptance.test_cli import run_id
from tests.conftest import RunCli

LINES = "for i in range(1000): print(f'line {i:04d}')"
OUT = b"".join(f"line {i:04d}\n".encode() for i in range(1000))


def test_logs_marks_the_gap_once_and_raw_keeps_head_and_tail(db: str, run_cli: RunCli) -> None:
    ran = run_cli("run", "--db", db, "-q", "--max-output", "1KiB", "--", "python3", "-c", LINES)
    assert ran.rc == 0, ran.stderr
    ex_id = run_id(ran.err_lines)
    dropped = len(OUT) - 1024
    text = run_cli("logs", "--db", db, ex_id).stdout
    marker = f"[outspool: {dropped:,} bytes dropped]\n".encode()
    assert text.count(b"[outspool:") == 1
    head, _, tail = text.partition(marker)
    assert head == OUT[:512] + b"\n"  # the head ends mid-line: the marker gets its own line
    assert tail == OUT[-512:]
    assert run_cli("logs", "--db", db, ex_id, "--follow").stdout == text  # the follow path too
    raw = run_cli("logs", "--db", db, ex_id, "--raw").stdout
    assert raw == OUT[:512] + OUT[-512:]
    last = run_cli("logs", "--db", db, ex_id, "--tail", "2").stdout
    assert last == b"line 0998\nline 0999\n"
    shown = json.loads(run_cli("show", "--db", db, ex_id, "--json").stdout)
    assert shown["stdout_size"] == len(OUT)
    assert shown["stdout_dropped"] == dropped
    assert shown["stderr_dropped"] == 0
    assert shown["output_truncated"] is True
    table = run_cli("ls", "--db", db).stdout.decode().splitlines()
    assert "OUTPUT" in table[0]
    assert " 1.0 KiB* " in table[1]  # what was kept, marked: not the 10,000 bytes written
    assert (
        table[2] == "* output limit: OUTPUT is what was kept; `show ID` says how much was dropped"
    )


def test_a_bad_size_is_one_line_and_exit_2(db: str, run_cli: RunCli) -> None:
    result = run_cli("run", "--db", db, "--max-output", "lots", "--", "true")
    assert result.rc == 2
    assert "not a size" in result.stderr.decode()
    assert b"Traceback" not in result.stderr


def test_delete_and_prune_on_the_command_line(db: str, run_cli: RunCli) -> None:
    made = [
        run_id(run_cli("run", "--db", db, "-q", "--", "python3", "-c", f"print({i})").err_lines)
        for i in range(4)
    ]
    deleted = run_cli("delete", "--db", db, made[0])
    assert (deleted.rc, deleted.stdout) == (0, f"{made[0]} deleted\n".encode())
    unknown = run_cli("delete", "--db", db, made[0])
    assert unknown.rc == 2
    assert unknown.err_lines == [unknown.err_lines[0]]
    dry = json.loads(run_cli("prune", "--db", db, "--keep-last", "1", "--dry-run", "--json").stdout)
    assert (dry["count"], dry["dry_run"]) == (2, True)
    done = run_cli("prune", "--db", db, "--keep-last", "1")
    assert done.stdout == b"deleted 2 executions (4 B of output)\n"
    listed = json.loads(run_cli("ls", "--db", db, "--json").stdout)
    assert [ex["id"] for ex in listed] == [made[3]]
    nothing = run_cli("prune", "--db", db)
    assert nothing.rc == 2
    assert b"at least one of" in nothing.stderr
    bad = run_cli("prune", "--db", db, "--older-than", "soon")
    assert bad.rc == 2
    assert b"not a duration" in bad.stderr


def test_lines_with_times_mark_the_gap_too(db: str, run_cli: RunCli) -> None:
    ran = run_cli("run", "--db", db, "-q", "--max-output", "1KiB", "--", "python3", "-c", LINES)
    ex_id = run_id(ran.err_lines)
    dropped = len(OUT) - 1024
    rows = run_cli("logs", "--db", db, ex_id, "-t").stdout.split(b"\n")
    texts = [row.partition(b" ")[2] for row in rows if row]
    marker = f"[outspool: {dropped:,} bytes dropped]".encode()
    assert texts.count(marker) == 1
    at = texts.index(marker)
    assert b"\n".join(texts[:at]) + b"\n" == OUT[:512] + b"\n"  # the cut line ends there
    assert b"\n".join(texts[at + 1 :]) + b"\n" == OUT[-512:]
    got = [
        json.loads(row) for row in run_cli("logs", "--db", db, ex_id, "--json").stdout.splitlines()
    ]
    gaps = [row for row in got if "dropped" in row]
    assert len(gaps) == 1
    assert gaps[0]["dropped"] == dropped
    assert gaps[0]["stream"] == "stdout"
    times = [row["time"] for row in got]
    assert times == sorted(times)  # the tail kept its read times, after the head's
    assert "".join(r["text"] + "\n" for r in got[got.index(gaps[0]) + 1 :]) == OUT[-512:].decode()


def test_grep_never_joins_lines_across_the_gap(db: str, run_cli: RunCli) -> None:
    code = "print('a' * 600 + 'Y' + 'b' * 498)"  # kept: a * 500, then Y b * 498 (1000 bytes)
    ran = run_cli("run", "--db", db, "-q", "--max-output", "1000", "--", "python3", "-c", code)
    ex_id = run_id(ran.err_lines)
    assert run_cli("grep", "--db", db, "aY", ex_id).rc == 1  # "a...a" + "Yb..." were not one line
    found = run_cli("grep", "--db", db, "Yb", ex_id)
    assert found.rc == 0, found.stderr
    assert found.stdout.count(b"\n") == 1
