"""A follower in another process sees a running execution's output as it is committed.

How fast is measured by ``make bench`` (the follow latency scenario), not asserted here: the
test checks that each line reaches the follower while the program is still
held at its next gate, so only live delivery can pass.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outspool import Outspool
from outspool.settings import Settings
from tests.helpers import wait_until

pytestmark = pytest.mark.postgres

#: Prints a line, then waits for the test to open and close the FIFO, three times.
GATED = """
import sys
for i in range(3):
    print(f"line {i}", flush=True)
    open(sys.argv[1]).read()
print("end", flush=True)
"""


def release(fifo: Path) -> None:
    """Let the program past its next gate (once it is waiting there)."""

    def opened() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise

    os.close(wait_until(opened, message="the program waiting at its gate"))


class Reader:
    """Collects a process's stdout without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.data = b""

    def until(self, expected: bytes, timeout: float) -> None:
        """Read until ``expected`` has arrived."""
        deadline = time.monotonic() + timeout
        while expected not in self.data:
            left = deadline - time.monotonic()
            assert left > 0, f"{expected!r} not seen; got {self.data!r}"
            if select.select([self.fd], [], [], left)[0]:
                piece = os.read(self.fd, 65536)
                assert piece, f"follower ended before {expected!r}; got {self.data!r}"
                self.data += piece


def test_follower_in_another_process_sees_each_line_while_the_program_runs(
    pg_url: str, spawn_cli: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    with Outspool(pg_url, Settings.load()) as spool:
        handle = spool.start([sys.executable, "-c", GATED, str(fifo)])
        follower = spawn_cli("logs", handle.id, "--follow", "--raw", "--db", pg_url)
        out = Reader(follower)
        for expected in (b"line 0\n", b"line 1\n", b"line 2\n"):
            out.until(expected, 30)
            assert not handle.join(0), "the program is held at its gate: this output is live"
            release(fifo)
        out.until(b"end\n", 30)
        handle.wait(30)
        assert follower.wait(30) == 0
        out.data += follower.stdout.read() if follower.stdout else b""
    assert out.data == b"line 0\nline 1\nline 2\nend\n"
