"""Following a running execution, from another thread and from another process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from outspool import Outspool, Running, Settings, Status, Stream
from tests.conftest import SpawnCli
from tests.helpers import alive, capture_then_kill_it, wait_until

# Prints part one, waits for a go file, prints part two (both streams, binary bytes).
CHILD = r"""
import os, sys, time
go = sys.argv[1]
os.write(1, b"part one \xff\x00\n")
os.write(2, b"err one\r\n")
deadline = time.monotonic() + 60
while not os.path.exists(go):
    assert time.monotonic() < deadline
    time.sleep(0.002)
for i in range(2000):
    os.write(1 if i % 2 else 2, b"line %d \xe2\x82" % i + b"\xac\n")
"""
PART_ONE = b"part one \xff\x00\nerr one\r\n"


def test_follower_in_another_process_sees_the_whole_output(
    tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    db = str(tmp_path / "follow.db")
    go = tmp_path / "go"
    run = spawn_cli("run", "-q", "--db", db, "--", sys.executable, "-c", CHILD, str(go))
    assert run.stderr is not None
    first = run.stderr.readline().decode()  # the readiness line
    assert first.startswith("outspool: execution "), first
    ex_id = first.split()[-1]
    follower = spawn_cli("logs", ex_id, "--db", db, "--follow", "--raw")
    seen = bytearray()

    def collect() -> None:
        assert follower.stdout is not None
        while piece := os.read(follower.stdout.fileno(), 65536):
            seen.extend(piece)

    reader = threading.Thread(target=collect)
    reader.start()
    try:
        wait_until(lambda: len(seen) >= len(PART_ONE), message="part one at the follower")
        assert bytes(seen) in (PART_ONE, b"err one\r\npart one \xff\x00\n")
        assert run.poll() is None  # still running: the follower saw live output
        go.touch()
        assert run.wait(60) == 0
        assert follower.wait(60) == 0
    finally:
        go.touch()
        reader.join(60)
    with Outspool(db) as spool:
        stored = spool.read(ex_id)
        assert spool.get(ex_id).status is Status.SUCCEEDED
    assert bytes(seen) == stored
    assert stored.count(b"\xe2\x82\xac\n") == 2000


def test_follow_one_stream_from_an_offset_in_process(
    spool: Outspool, handles: list[Running], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    handle = spool.start([sys.executable, "-c", CHILD, str(go)])
    handles.append(handle)
    follower = spool.follow(handle.id, Stream.STDOUT, offset=5)
    got = bytearray()

    def first_line() -> bool:
        got.extend(b"".join(p for _, p in follower.poll(0.05) if isinstance(p, bytes)))
        return got.endswith(b"\n")

    wait_until(first_line, message="first stdout")
    assert bytes(got) == b"one \xff\x00\n"
    go.touch()
    for stream, piece in follower:
        assert stream is Stream.STDOUT
        assert isinstance(piece, bytes)
        got.extend(piece)
    assert follower.done
    ex = handle.wait(60)
    assert bytes(got) == spool.read(ex.id, Stream.STDOUT)[5:]


def test_recent_lines_of_a_running_execution_from_memory(
    spool: Outspool, handles: list[Running], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    handle = spool.start([sys.executable, "-c", CHILD, str(go)])
    handles.append(handle)
    wait_until(lambda: len(handle.recent_lines()) >= 2, message="recent lines")
    assert sorted(handle.recent_lines()) == [b"err one\r", b"part one \xff\x00"]
    go.touch()
    handle.wait(60)


def test_logs_follow_of_a_finished_execution_ends(spool: Outspool) -> None:
    ex = spool.run([sys.executable, "-c", "print('done')"])
    done = subprocess.run(
        [sys.executable, "-m", "outspool.cli", "logs", ex.id, "--db", str(spool.db), "-f"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, b"done\n")


@pytest.mark.parametrize("face", ["sync", "async"])
def test_following_ends_when_the_capturing_process_is_lost_and_kills_nothing(
    db_path: Path, tmp_path: Path, spawn_cli: SpawnCli, face: str
) -> None:
    settings = Settings.load(heartbeat_timeout=1.0)
    with Outspool(str(db_path), settings) as spool:
        execution_id, grandchild = capture_then_kill_it(db_path, tmp_path, spawn_cli)
        follower = spool.follow(execution_id)
        got = bytearray()

        async def follow_async() -> None:
            async for _, piece in follower:
                assert isinstance(piece, bytes)
                got.extend(piece)

        def follow() -> None:
            if face == "sync":
                got.extend(b"".join(p for _, p in follower if isinstance(p, bytes)))
            else:
                asyncio.run(follow_async())

        reader = threading.Thread(target=follow)
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "the follow did not end"
        ex = spool.get(execution_id)
        assert ex.status is Status.LOST
        assert bytes(got) == spool.read(execution_id)
        assert alive(grandchild), "following must not kill anything"
        assert spool.recover() == []  # already lost; recovery still kills what it left behind
        wait_until(lambda: not alive(grandchild), message="recovery to kill the grandchild")
