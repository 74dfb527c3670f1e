"""Every wait is interruptible: a timeout, a cancel or a signal acts on the program while
its capture is blocked on outspool's own stdout or on the store (bounded pending memory,
a full disk), and the record says what happened.

The full disk is a small tmpfs the test mounts itself (root only; skipped elsewhere).
"""

from __future__ import annotations

import fcntl
import random
import signal
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status, Stream
from tests.conftest import RunCli, SpawnCli
from tests.helpers import Lines, alive, blocked_writing_pipe, wait_until

_F_GETPIPE_SZ = 1032
#: A program that writes SIZE random bytes (seed 7), far more than the small disk takes.
SIZE = 8 << 20
WRITER = f"import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes({SIZE}))"
#: The store holds little in memory and gives up on the busy database quickly.
TIGHT = {
    "OUTSPOOL_MAX_PENDING_BYTES": str(256 << 10),
    "OUTSPOOL_COMPRESSION": "none",
    "OUTSPOOL_BUSY_TIMEOUT": "1",
}


def execution_of(run: subprocess.Popen[bytes]) -> str:
    assert run.stderr is not None
    line = run.stderr.readline().decode()
    assert line.startswith("outspool: execution "), line
    return line.split()[-1]


def record(db: str, execution_id: str) -> dict[str, object]:
    with Outspool(db) as spool:
        return spool.get(execution_id).to_json()


def program_pid(db: str, execution_id: str) -> int:
    def started() -> int | None:
        pid = record(db, execution_id)["pid"]
        return pid if isinstance(pid, int) else None

    return wait_until(started, message="the program to start")


def echo_is_full(run: subprocess.Popen[bytes]) -> bool:
    """Whether outspool's stdout, a pipe the test never reads, is full."""
    assert run.stdout is not None
    fd = run.stdout.fileno()
    size = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    queued = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, queued)
    return int.from_bytes(queued, sys.byteorder) >= size


def test_a_timeout_acts_while_nobody_reads_the_echo(db_path: Path, spawn_cli: SpawnCli) -> None:
    """`outspool run --timeout 2 -- yes | (sleep 12; cat)` ends at its timeout, not when
    the reader comes back: here the reader never does."""
    db = str(db_path)
    run = spawn_cli("run", "--db", db, "--timeout", "2", "--", "yes")
    execution_id = execution_of(run)
    assert run.wait(60) == 124  # stdout is never read, before or after
    assert echo_is_full(run)
    ex = record(db, execution_id)
    assert (ex["status"], ex["reason"]) == ("timed_out", "timeout")
    with Outspool(db) as spool:
        stored = spool.read(execution_id)
    assert len(stored) > 0 and set(stored.split(b"\n")) <= {b"y", b""}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_acts_while_nobody_reads_the_echo(
    db_path: Path, spawn_cli: SpawnCli, sig: signal.Signals
) -> None:
    db = str(db_path)
    run = spawn_cli("run", "--db", db, "--", "yes")
    execution_id = execution_of(run)
    pid = program_pid(db, execution_id)
    wait_until(lambda: echo_is_full(run), message="outspool's stdout to fill up")
    wait_until(lambda: blocked_writing_pipe(pid), message="the program to wait for outspool")
    run.send_signal(sig)
    assert run.wait(60) == 128 + sig
    assert not alive(pid)
    ex = record(db, execution_id)
    assert ex["status"] == "cancelled"
    assert ex["reason"] == f"interrupted by {sig.name}"


def fill(disk: Path) -> Path:
    """Leave about 0.5 MiB free on ``disk``; the file to remove to make room again."""
    filler = disk / "filler"
    filler.write_bytes(b"\0" * ((3 << 20) - (512 << 10)))
    return filler


def run_on_a_full_disk(disk: Path, spawn_cli: SpawnCli) -> tuple[Path, Blocked]:
    """``outspool run`` of :data:`WRITER` on ``disk``, once the store refused its output;
    the file to remove to make room, and the run."""
    db = str(disk / "out.db")
    filler = fill(disk)
    run = spawn_cli("run", "-q", "--db", db, "--", sys.executable, "-c", WRITER, env=TIGHT)
    execution_id = execution_of(run)
    stderr = Lines(run, stderr=True)
    pid = program_pid(db, execution_id)
    refused = b"cannot write output to the database"
    wait_until(lambda: stderr.has(refused), message="the store to refuse writes")
    return filler, Blocked(run, db, execution_id, stderr, pid)


@dataclass
class Blocked:
    """A run whose capture the store holds back."""

    run: subprocess.Popen[bytes]
    db: str
    execution_id: str
    stderr: Lines
    pid: int  #: the program's

    def said(self, text: bytes) -> None:
        wait_until(lambda: self.stderr.has(text), message=f"outspool to say {text!r}")

    def exit_code(self) -> int:
        try:
            return self.run.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running; it said {bytes(self.stderr.data)!r}") from None


def test_a_signal_acts_while_the_disk_is_full(small_disk: Path, spawn_cli: SpawnCli) -> None:
    """SIGTERM stops the program at once; outspool holds its output until there is room,
    then records the end: cancelled, with every byte the program wrote before it."""
    filler, b = run_on_a_full_disk(small_disk, spawn_cli)
    b.run.send_signal(signal.SIGTERM)
    wait_until(lambda: not alive(b.pid), message="the program to be stopped")
    b.said(b"interrupt again to leave")
    assert b.run.poll() is None  # it holds the output until the store takes it
    filler.unlink()
    assert b.exit_code() == 128 + signal.SIGTERM
    ex = record(b.db, b.execution_id)
    assert (ex["status"], ex["reason"]) == ("cancelled", "interrupted by SIGTERM")
    with Outspool(b.db) as spool:
        stored = spool.read(b.execution_id, Stream.STDOUT)
    assert 0 < len(stored) < SIZE
    assert stored == random.Random(7).randbytes(SIZE)[: len(stored)]


def test_a_second_signal_leaves_a_full_disk_at_once(
    small_disk: Path, spawn_cli: SpawnCli, run_cli: RunCli
) -> None:
    filler, b = run_on_a_full_disk(small_disk, spawn_cli)
    b.run.send_signal(signal.SIGINT)
    b.said(b"interrupt again to leave")
    b.run.send_signal(signal.SIGINT)
    assert b.exit_code() == 128 + signal.SIGINT  # the disk is still full
    # outspool sent SIGKILL before it left; the kernel ends the program right after
    wait_until(lambda: not alive(b.pid), message="the program to be killed")
    assert b.stderr.has(f"left without storing the rest of {b.execution_id}".encode())
    filler.unlink()
    impatient = {"OUTSPOOL_HEARTBEAT_TIMEOUT": "0.5"}
    wait_until(
        lambda: b.execution_id.encode() in run_cli("recover", "--db", b.db, env=impatient).stdout,
        message="recover to mark it lost, its capturing process gone",
    )
    assert record(b.db, b.execution_id)["status"] == "lost"


def test_cancel_acts_while_the_store_holds_the_capture_back(small_disk: Path) -> None:
    """The library's cancel (also what a worker does on `outspool cancel`) reaches the
    program while its capture waits for room that a full disk does not give."""
    settings = Settings.load(max_pending_bytes=256 << 10, compression="none", busy_timeout=1.0)
    with Outspool(str(small_disk / "out.db"), settings) as spool:
        filler = fill(small_disk)
        handle = spool.start([sys.executable, "-c", WRITER])
        try:
            wait_until(lambda: spool.writer.stats.retries > 0, message="the store to refuse")
            pid = handle.execution().pid
            assert pid is not None and alive(pid)
            handle.cancel("enough")
            wait_until(lambda: not alive(pid), message="the program to be stopped")
            filler.unlink()
            ex = handle.wait(120)
        finally:  # on failure too: with room, the capture ends and the store closes
            filler.unlink(missing_ok=True)
            if not handle.join(0):
                handle.cancel(force=True)
        assert (ex.status, ex.reason) == (Status.CANCELLED, "enough")
        stored = spool.read(ex.id, Stream.STDOUT)
        assert stored == random.Random(7).randbytes(SIZE)[: len(stored)]
