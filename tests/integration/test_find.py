"""Finding output again, on every backend: names, labels, line times, grep, wait, follow many.

The CLI runs as a real process against the test's store; programs are real.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

import pytest

from outspool import Outspool
from outspool.lines import Line, between
from outspool.models import Execution, Stream
from outspool.when import parse_instant
from tests.conftest import RunCli, SpawnCli
from tests.helpers import Lines, wait_until

#: Prints ten lines a few milliseconds apart, on both streams.
TEN_LINES = (
    "import sys, time\n"
    "for i in range(10):\n"
    "    print(f'line {i}', file=sys.stderr if i % 3 == 2 else sys.stdout, flush=True)\n"
    "    time.sleep(0.01)\n"
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture
def ten(spool: Outspool) -> Execution:
    return spool.run(py(TEN_LINES), name="ten", labels={"kind": "demo", "team": "a"})


def test_line_times_are_monotonic_and_within_the_run(
    db_url: str, run_cli: RunCli, ten: Execution
) -> None:
    got = run_cli("logs", "ten", "--json", "--db", db_url)
    assert got.rc == 0, got.stderr
    lines = json_lines(got.stdout)
    # two pipes ready at once may be read in either order (docs/architecture.md), so the
    # streams are checked line by line, not the interleaving
    assert sorted((ln["text"], ln["stream"]) for ln in lines) == [
        (f"line {i}", "stderr" if i % 3 == 2 else "stdout") for i in range(10)
    ]
    times = [parse_instant(ln["time"]) for ln in lines]
    assert times == sorted(times)
    assert ten.started_at is not None and ten.finished_at is not None
    assert int(ten.started_at * 1000) / 1000 <= times[0]
    assert times[-1] <= ten.finished_at
    assert times[-1] > times[0]  # read over time, not stamped once
    stamped = run_cli("logs", ten.id, "-t", "--db", db_url).stdout.decode().splitlines()
    assert stamped == [f"{ln['time']} {ln['text']}" for ln in lines]


def test_since_and_until_cut_exactly(
    spool: Outspool, db_url: str, run_cli: RunCli, ten: Execution
) -> None:
    lines = json_lines(run_cli("logs", "ten", "--json", "--db", db_url).stdout)
    cut = lines[4]["time"]
    since = run_cli("logs", "ten", "--json", "--since", cut, "--db", db_url)
    until = run_cli("logs", "ten", "--json", "--until", cut, "--db", db_url)
    assert json_lines(since.stdout) == [ln for ln in lines if ln["time"] >= cut]
    assert json_lines(until.stdout) == [ln for ln in lines if ln["time"] < cut]
    stored = list(spool.lines(ten.id))
    for ms in {ln.ms for ln in stored}:  # every cut-off, through the library
        assert [ln.ms for ln in between(stored, ms / 1000, None)] == [
            ln.ms for ln in stored if ln.ms >= ms
        ]
        assert [ln.ms for ln in between(stored, None, ms / 1000)] == [
            ln.ms for ln in stored if ln.ms < ms
        ]
    tail = run_cli("logs", "ten", "-n", "2", "--stream", "stdout", "--since", "1h", "--db", db_url)
    assert tail.stdout == b"line 7\nline 9\n"
    bad = run_cli("logs", "ten", "--since", "yesterday", "--db", db_url)
    assert bad.rc == 2 and len(bad.err_lines) == 1


#: Lines over time on both streams; every fifth is written in two parts around a pause,
#: so lines span reads and chunks.
#: Prints 45 lines on both streams, every fifth in two writes, and waits until each write
#: is committed before the next one (its argument is the store's URL): so the output lies
#: in many chunks, some of them cut mid-line, however loaded the machine is.
SPREAD = (
    "import os, sys, time\n"
    "from outspool import Outspool\n"
    "spool, me = Outspool(sys.argv[1], create=False).open(), os.environ['OUTSPOOL_EXECUTION_ID']\n"
    "sent = [0, 0]\n"
    "def put(i, text):\n"
    "    which = 1 if i % 4 == 3 else 0\n"
    "    out = (sys.stdout, sys.stderr)[which]\n"
    "    out.write(text); out.flush(); sent[which] += len(text.encode())\n"
    "    while True:\n"
    "        ex = spool.get(me)\n"
    "        if ex.stdout_size >= sent[0] and ex.stderr_size >= sent[1]:\n"
    "            return\n"
    "        time.sleep(0.001)\n"
    "for i in range(45):\n"
    "    if i % 5 == 0:\n"
    "        put(i, f'part of {i} ')\n"
    "    put(i, f'line {i}\\n')\n"
)


def windows_cut_exactly(spool: Outspool, ex: Execution, every: int) -> None:
    """Every ``every``-th cut-off, each stream: ``since``/``until`` give the whole output's
    lines."""

    def seen(lines: Iterable[Line]) -> list[tuple[int, Stream, bytes, bool, int]]:
        return [(ln.ms, ln.stream, ln.data, ln.ended, ln.dropped) for ln in lines]

    for stream in (None, Stream.STDOUT, Stream.STDERR):
        stored = seen(spool.lines(ex.id, stream))
        for ms in sorted({m for m, *_ in stored} | {stored[-1][0] + 1})[::every]:
            since = seen(spool.lines(ex.id, stream, since=ms / 1000))
            until = seen(spool.lines(ex.id, stream, until=ms / 1000))
            assert since == [line for line in stored if line[0] >= ms]
            assert until == [line for line in stored if line[0] < ms]


def test_time_windows_read_from_the_right_chunk_and_cut_exactly(
    spool: Outspool, db_url: str, run_cli: RunCli
) -> None:
    """``since`` starts reading at the chunk where it begins (mid-line there or not),
    ``until`` stops once nothing earlier can come; the lines are those of the whole
    output, also across an output limit's gap (tests/contract/test_reading.py tries
    every cut-off of many chunkings)."""
    ex = spool.run([*py(SPREAD), db_url])
    assert ex.chunk_count >= 54  # one per write
    windows_cut_exactly(spool, ex, 3)
    cut = spool.run([*py(SPREAD), db_url], max_output=200)
    assert cut.stdout_dropped > 0
    windows_cut_exactly(spool, cut, 1)
    late = sorted({ln.ms for ln in spool.lines(ex.id)})[-3]
    assert spool.since_start(ex.id, None, late / 1000)[0] > 0  # earlier chunks are not read
    every = json_lines(run_cli("logs", ex.id, "--json", "--db", db_url).stdout)
    for cut in {every[n]["time"] for n in (7, 30, -1)}:
        since_cli = run_cli("logs", ex.id, "--json", "--since", cut, "--db", db_url)
        assert json_lines(since_cli.stdout) == [ln for ln in every if ln["time"] >= cut]
        until_cli = run_cli("logs", ex.id, "--json", "--until", cut, "--db", db_url)
        assert json_lines(until_cli.stdout) == [ln for ln in every if ln["time"] < cut]


def test_names_resolve_to_the_newest_and_prefixes_stay_exact(
    spool: Outspool, db_url: str, run_cli: RunCli
) -> None:
    old = spool.run(py("print('old')"), name="build")
    new = spool.run(py("print('new')"), name="build")
    assert run_cli("logs", "build", "--db", db_url).stdout == b"new\n"
    assert run_cli("logs", old.id, "--db", db_url).stdout == b"old\n"
    assert run_cli("show", "build", "--json", "--db", db_url).stdout.count(new.id.encode()) == 1
    common = next(i for i in range(16) if old.id[i] != new.id[i])
    ambiguous = run_cli("logs", old.id[:common], "--db", db_url)
    assert ambiguous.rc == 2
    assert len(ambiguous.err_lines) == 1
    assert old.id in ambiguous.err_lines[0] and new.id in ambiguous.err_lines[0]
    assert run_cli("logs", "nothing-like-it", "--db", db_url).rc == 2


def test_labels_are_stored_shown_and_filtered(
    spool: Outspool, db_url: str, run_cli: RunCli, ten: Execution
) -> None:
    other = spool.run(py("print(1)"), labels={"kind": "demo", "team": "b"})
    run_cli("run", "-q", "--label", "kind=cli", "--db", db_url, "--", "true")

    def ids(*args: str) -> list[str]:
        got = run_cli("ls", "--json", *args, "--db", db_url)
        assert got.rc == 0, got.stderr
        return [ex["id"] for ex in json.loads(got.stdout)]

    assert ids("--label", "kind=demo") == [other.id, ten.id]
    assert ids("--label", "kind=demo", "--label", "team=a") == [ten.id]
    assert ids("--label", "team=c") == []
    assert ids("--name", "ten") == [ten.id]
    assert ids("--since", "1h", "--status", "succeeded", "--label", "team=b") == [other.id]
    assert ids("--since", "2099-01-01T00:00:00Z") == []
    shown = json.loads(run_cli("show", ten.id, "--json", "--db", db_url).stdout)
    assert shown["labels"] == {"kind": "demo", "team": "a"}
    bad = run_cli("run", "--label", "no equals", "--db", db_url, "--", "true")
    assert bad.rc == 2 and len(bad.err_lines) == 1


def test_ls_rows_show_shell_exit_codes_and_one_line_commands(
    spool: Outspool, db_url: str, run_cli: RunCli
) -> None:
    spool.run(language="sh", code="echo a\nkill -TERM $$")
    got = run_cli("ls", "--db", db_url)
    rows = got.stdout.decode().splitlines()
    assert len(rows) == 2, rows  # header + one row: the code's newline stays escaped
    assert " 143  " in rows[1] and "\\n" in rows[1]
    assert "\x1b[" not in got.stdout.decode()  # not a terminal: no colour
    assert run_cli("--db", db_url, "ls").stdout == got.stdout  # common option first


def test_grep_prints_id_line_text_and_exits_like_grep(
    spool: Outspool, db_url: str, run_cli: RunCli, ten: Execution
) -> None:
    hit = run_cli("grep", r"line [345]", "ten", "--stream", "stdout", "--db", db_url)
    assert hit.rc == 0
    assert hit.stdout.decode().splitlines() == [f"{ten.id}:3:line 3", f"{ten.id}:4:line 4"]
    errors = run_cli("grep", "-i", "LINE 2", "--stream", "stderr", "--db", db_url)
    assert errors.stdout.decode().splitlines() == [f"{ten.id}:1:line 2"]
    assert run_cli("grep", "absent", "--db", db_url).rc == 1
    assert run_cli("grep", "line", "--label", "team=zzz", "--db", db_url).rc == 1
    assert run_cli("grep", "line 9", "--label", "team=a", "--db", db_url).rc == 0
    assert run_cli("grep", "line", "--until", "2000-01-01T00:00:00Z", "--db", db_url).rc == 1
    bad = run_cli("grep", "(unclosed", "--db", db_url)
    assert bad.rc == 2 and len(bad.err_lines) == 1


def test_wait_exits_like_run(spool: Outspool, db_url: str, run_cli: RunCli) -> None:
    ok = spool.run(["true"])
    three = spool.run(["sh", "-c", "exit 3"])
    killed = spool.run(["sh", "-c", "kill -TERM $$"])
    assert run_cli("wait", ok.id, "--db", db_url).rc == 0
    assert run_cli("wait", three.id, "--db", db_url).rc == 3
    assert run_cli("wait", killed.id, "--db", db_url).rc == 128 + signal.SIGTERM
    assert run_cli("wait", ok.id, ok.id, "--db", db_url).rc == 0
    assert run_cli("wait", ok.id, three.id, "--db", db_url).rc == 1
    queued = spool.submit(["true"])
    timed_out = run_cli("wait", queued.id, "--timeout", "0.2", "--db", db_url)
    assert timed_out.rc == 124 and len(timed_out.err_lines) == 1
    assert "after 0.2 s" in timed_out.err_lines[0]


def test_wait_returns_when_a_running_execution_ends(
    spool: Outspool, db_url: str, spawn_cli: SpawnCli, tmp_path: Any
) -> None:
    gate = tmp_path / "go"
    handle = spool.start(["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.01; done; exit 7"])
    waiter = spawn_cli("wait", handle.id, "--db", db_url)
    gate.touch()
    assert waiter.wait(60) == 7
    handle.wait(60)


def test_follow_many_picks_up_executions_that_start_later(
    spool: Outspool, db_url: str, spawn_cli: SpawnCli, tmp_path: Any
) -> None:
    gate = tmp_path / "go"
    first = spool.start(
        ["sh", "-c", f"echo first up; while [ ! -e {gate} ]; do sleep 0.01; done; echo first end"],
        name="first",
        labels={"group": "g"},
    )
    follow = spawn_cli("logs", "-f", "--label", "group=g", "--db", db_url)
    seen = Lines(follow)
    wait_until(lambda: seen.has(b"first | first up\n"), message="the first execution's line")
    later = spool.run(py("print('second here')"), labels={"group": "g"})
    spool.run(py("print('not followed')"), labels={"group": "other"})
    wait_until(lambda: seen.has(f"{later.id[:12]} | second here\n".encode()), message="later")
    gate.touch()
    first.wait(60)
    wait_until(lambda: seen.has(b"first | first end\n"), message="the first execution's end")
    assert not seen.has(b"not followed")
    follow.kill()
    follow.wait(30)


def test_follow_several_ids_ends_when_all_have_ended(
    spool: Outspool, db_url: str, run_cli: RunCli
) -> None:
    a = spool.run(py("print('from a')"), name="a")
    b = spool.run(py("print('from b')"))
    got = run_cli("logs", "-f", "a", b.id, "--db", db_url, timeout=60)
    assert got.rc == 0
    assert sorted(got.stdout.decode().splitlines()) == sorted(
        ["a | from a", f"{b.id[:12]} | from b"]
    )
    assert a.id
    stamped = run_cli("logs", "a", b.id, "-t", "--db", db_url).stdout.decode().splitlines()
    assert all(" | 20" in line for line in stamped)


def test_library_waits_and_reads_lines(spool: Outspool, ten: Execution) -> None:
    assert spool.wait("ten", timeout=5).id == ten.id
    lines = list(spool.lines("ten"))
    assert [ln.number for ln in lines] == list(range(1, 11))
    assert all(ten.started_at is not None and ln.time >= int(ten.started_at) for ln in lines)
    with pytest.raises(TimeoutError):
        spool.wait(spool.submit(["true"]).id, timeout=0.05)
    assert time.time() > 0
