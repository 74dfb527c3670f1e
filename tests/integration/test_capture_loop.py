"""One capture loop per process (outspool.loop): every live execution is read by one
thread, and nothing one execution waits for (its echo's reader) holds back the others."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

from outspool import Outspool, Running, Settings, Status, Stream
from tests.conftest import SpawnCli
from tests.faults.test_blocked_waits import echo_is_full, execution_of
from tests.helpers import cli_env, wait_until

#: Prints its lines (argv[2] of them) on both streams, the first at once, the rest once
#: the file argv[1] exists: so all programs are live together.
CHATTY = """
import os, sys, time
n = int(sys.argv[2])
tag = sys.argv[3]
print(f"{tag} out 0", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.005)
for i in range(1, n):
    print(f"{tag} out {i}", flush=True)
    print(f"{tag} err {i}", file=sys.stderr, flush=True)
"""


def test_many_live_executions_share_one_capture_thread(
    spool: Outspool, handles: list[Running], tmp_path: Path
) -> None:
    go = tmp_path / "go"
    n, lines = 40, 200
    started = [
        spool.start([sys.executable, "-c", CHATTY, str(go), str(lines), f"p{k}"]) for k in range(n)
    ]
    handles.extend(started)
    for handle in started:
        wait_until(partial(spool.read, handle.id), 120, "every program to print")
    capture_threads = [t for t in threading.enumerate() if t.name == "outspool-capture"]
    assert len(capture_threads) == 1
    go.touch()
    for k, handle in enumerate(started):
        assert handle.wait(120).status is Status.SUCCEEDED
        out = "".join(f"p{k} out {i}\n" for i in range(lines)).encode()
        err = "".join(f"p{k} err {i}\n" for i in range(1, lines)).encode()
        assert spool.read(handle.id, Stream.STDOUT) == out
        assert spool.read(handle.id, Stream.STDERR) == err


#: Starts ``yes`` echoed to this script's stdout (a pipe the test never reads), waits until
#: that pipe is full, then runs another program to its end and cancels ``yes``.
HELD_ECHO = """
import fcntl, sys, termios, time
from outspool import Outspool, Settings
settings = Settings.load(kill_grace=0.5, drain_grace=0.5, sandbox="none")
def full():
    size = fcntl.fcntl(1, 1032)
    queued = bytearray(4)
    fcntl.ioctl(1, termios.FIONREAD, queued)
    return int.from_bytes(queued, sys.byteorder) >= size
with Outspool(sys.argv[1], settings) as spool:
    held = spool.start(["yes"], echo=True)
    while not full():
        time.sleep(0.005)
    other = spool.run([sys.executable, "-c", "print('other done')"])
    print(other.status.value, spool.read(other.id), file=sys.stderr, flush=True)
    held.cancel()
    print(held.wait(60).status.value, file=sys.stderr, flush=True)
"""


def test_an_echo_nobody_reads_holds_back_no_other_execution(db_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HELD_ECHO, str(db_path)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as script:
        stuck = threading.Timer(240, script.kill)  # a capture stuck for good fails the test
        stuck.start()
        try:
            assert script.stderr is not None
            other = script.stderr.readline()  # stdout is never read
            held = script.stderr.readline()
            assert script.wait(120) == 0, script.stderr.read()
        finally:
            stuck.cancel()
            script.kill()
    assert other == b"succeeded b'other done\\n'\n"
    assert held == b"cancelled\n"


def test_an_echo_held_up_by_its_reader_goes_on_whole(db_path: Path, spawn_cli: SpawnCli) -> None:
    """The echo waits (without blocking the loop) until its reader takes more; then every
    byte is echoed, in order, as stored."""
    size = 4 << 20
    writer = f"import random, sys; sys.stdout.buffer.write(random.Random(3).randbytes({size}))"
    run = spawn_cli("run", "--db", str(db_path), "--", sys.executable, "-c", writer)
    execution_id = execution_of(run)
    wait_until(lambda: echo_is_full(run), message="outspool's stdout to fill up")
    assert run.stdout is not None
    echoed = run.stdout.read()
    assert run.wait(60) == 0
    expected = random.Random(3).randbytes(size)
    assert echoed == expected
    with Outspool(str(db_path)) as spool:
        assert spool.read(execution_id) == expected


#: Writes argv[1] bytes to stdout and argv[2] to stderr in one go each (the pipes, enlarged
#: to 1 MiB, take them all) and exits at once, before the capture can have read them.
BURST = """
import os, sys
for fd, n, byte in ((1, int(sys.argv[1]), b"o"), (2, int(sys.argv[2]), b"e")):
    view = memoryview(byte * n)
    while view:
        view = view[os.write(fd, view):]
"""


def test_output_still_in_the_pipes_when_the_drain_grace_ends_is_stored(db_path: Path) -> None:
    # drain_grace=0: the capture ends as soon as it sees the exit, the pipes' unread bytes
    # included; before, they were dropped (the loop had read 64 KiB of each, and a busy loop
    # under load did the same with the default grace)
    settings = Settings.load(drain_grace=0, kill_grace=0.5, sandbox="none")
    sizes = [(700_000 + k, 300_000 - k) for k in range(8)]
    with Outspool(str(db_path), settings) as spool:
        started = [spool.start([sys.executable, "-c", BURST, str(o), str(e)]) for o, e in sizes]
        for handle, (out, err) in zip(started, sizes, strict=True):
            ended = handle.wait(120)
            assert ended.status is Status.SUCCEEDED, ended.reason
            assert (ended.stdout_size, ended.stderr_size) == (out, err)
            assert spool.read(handle.id, Stream.STDOUT) == b"o" * out
            assert spool.read(handle.id, Stream.STDERR) == b"e" * err
