"""The CLI's malloc tuning (outspool.heap): a bulk capture reuses its read buffers."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI, cli_env

GLIBC = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

#: 256 MiB in 64 KiB writes of 16 distinct random blocks (a chunk does not compress).
PRODUCER = (
    "import os\n"
    "blocks = [os.urandom(65536) for _ in range(16)]\n"
    "for i in range(4096): os.write(1, blocks[i % 16])\n"
)


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc's mallopt")
def test_tune_is_taken_by_glibc() -> None:
    code = "from outspool import heap; print(heap.tune())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "True"


@pytest.mark.skipif(not GLIBC, reason="the tuning is glibc's mallopt")
def test_bulk_capture_does_not_refault_its_buffers(tmp_path: Path) -> None:
    """Untuned, `outspool run` of 256 MiB took 26,000-40,000 page faults (a freed read
    buffer's pages went back to the kernel and the next read faulted them in again);
    tuned, about 9,000: starting Python twice (the CLI and the producer) and the heap
    the capture keeps. Page faults counted, not time."""
    argv = [*CLI, "run", "--db", str(tmp_path / "o.db"), "--quiet", "--"]
    proc = subprocess.Popen(
        [*argv, sys.executable, "-c", PRODUCER],
        env=cli_env({"OUTSPOOL_MAX_OUTPUT": "0"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)  # the CLI's and the producer's it reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    assert usage.ru_minflt < 16_000
