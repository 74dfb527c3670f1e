"""Helpers shared by the test layers: polling with a deadline, the CLI as a subprocess,
and small child programs. No sleeps choreograph anything: tests wait for a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Where the CLI is started from: the package as a module of the running interpreter.
CLI = (sys.executable, "-m", "outspool.cli")

#: A child that replays a script of writes: records of (fd: u8, pause: u8, length: u32, bytes).
REPLAY = r"""
import os, struct, sys, time
data = open(sys.argv[1], "rb").read()
pos = 0
while pos < len(data):
    fd, pause, n = struct.unpack_from("<BBI", data, pos)
    pos += 6
    view = memoryview(data)[pos : pos + n]
    pos += n
    while view:
        view = view[os.write(fd, view) :]
    if pause:
        time.sleep(0.001)
"""


class Deadline(AssertionError):
    """A condition did not become true in time."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    message: str = "condition",
    interval: float = 0.005,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Deadline(f"{message} not reached within {timeout} s")
        time.sleep(interval)


@dataclass(frozen=True)
class CliResult:
    """What a finished CLI process left behind."""

    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.decode("utf-8", "replace").splitlines()


#: Most tests share files with the programs they run, so workers they start run jobs
#: unsandboxed unless a test asks (tests/integration/test_sandbox.py does).
UNSANDBOXED = {"OUTSPOOL_SANDBOX": "none"}


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without any OUTSPOOL_* variable, plus ``extra`` (and, unless it
    says otherwise, ``OUTSPOOL_SANDBOX=none``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTSPOOL_")}
    env.update(UNSANDBOXED)
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> CliResult:
    """Run ``outspool ARGS...`` as a real process to its end."""
    done = subprocess.run(
        [*CLI, *args],
        env=cli_env(env),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def encode_writes(writes: Sequence[tuple[int, bytes, bool]]) -> bytes:
    """The script :data:`REPLAY` reads: (fd, data, pause after) per write."""
    out = bytearray()
    for fd, data, pause in writes:
        out += bytes([fd, int(pause)]) + len(data).to_bytes(4, "little") + data
    return bytes(out)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def blocked_writing_pipe(pid: int) -> bool:
    """True when ``pid`` sleeps in a write to a full pipe."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if "pipe_write" in wchan or "wait_writable" in wchan:
        return True
    # otherwise: inside the write syscall (x86-64: 1, arm64: 64) on fd 1 or 2
    return len(syscall) > 1 and syscall[0] in ("1", "64") and syscall[1] in ("0x1", "0x2")


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """The counters of /proc/PID/io (rchar, wchar, write_bytes, ...)."""
    counters = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, value = line.split(":")
        counters[key] = int(value)
    return counters


#: Writes its pid and a background grandchild's, then ticks until killed.
TICKING = (
    "echo $$ > {pids}; sleep 300 & echo $! >> {pids}; while true; do echo tick; sleep 0.02; done"
)


def capture_then_kill_it(
    db_path: Path | str, tmp_path: Path, spawn_cli: Callable[..., subprocess.Popen[bytes]]
) -> tuple[str, int]:
    """Start ``outspool run`` on a ticking program, SIGKILL that capturing process;
    the execution's ID and the pid of its program's (surviving) background grandchild."""
    pids = tmp_path / "pids"
    capturer = spawn_cli(
        "run", "--quiet", "--db", str(db_path), "--", "sh", "-c", TICKING.format(pids=pids),
        env={"OUTSPOOL_HEARTBEAT_INTERVAL": "0.1"},
    )  # fmt: skip
    assert capturer.stderr is not None
    execution_id = capturer.stderr.readline().decode().split()[-1]
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, message="pids")
    grandchild = int(pids.read_text().split()[1])
    capturer.send_signal(signal.SIGKILL)
    capturer.wait(30)
    return execution_id, grandchild


class Lines:
    """Collects a pipe's output in a thread, so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[bytes], *, stderr: bool = False) -> None:
        pipe = proc.stderr if stderr else proc.stdout
        assert pipe is not None
        self.data = bytearray()
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while piece := os.read(self._pipe.fileno(), 4096):
            self.data.extend(piece)

    def has(self, text: bytes) -> bool:
        return text in self.data
