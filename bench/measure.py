"""Measure one capturing process: wall time, its own CPU, peak RSS and bytes it sent to disk.

How (Linux only):
  * wall time: from spawn until the process has exited (``waitid(WNOWAIT)``), monotonic clock;
  * CPU: ``utime + stime`` from ``/proc/<pid>/stat`` read while the process is a zombie
    (exited, not yet reaped). Those fields are the process's own; the producer it spawned
    and reaped is accounted separately (cutime/cstime), so it is excluded;
  * peak RSS: ``VmHWM`` from ``/proc/<pid>/status``, sampled every 20 ms while it runs (a
    zombie has no memory map left). ``VmHWM`` is a high-water mark, so only growth in the
    last 20 ms could be missed;
  * disk bytes: ``write_bytes`` from ``/proc/<pid>/io`` read on the zombie. It counts pages
    the process dirtied in the page cache (what it caused to be sent to storage), and it
    includes the I/O of children it reaped (producers write only to pipes: 0).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """What one run of one capturing process cost."""

    wall_s: float
    exit_code: int
    cpu_s: float | None = None
    rss_mb: float | None = None
    disk_bytes: int | None = None


def _hwm_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def stat_cpu(stat_file: Path) -> float | None:
    """CPU seconds (user + system) in a ``/proc/.../stat`` file; None once it is gone."""
    try:
        stat = stat_file.read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cpu_s(pid: int) -> float | None:
    return stat_cpu(Path(f"/proc/{pid}/stat"))


def _write_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return None


class _RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            kib = _hwm_kib(self.pid)
            if kib is not None:
                self.peak_kib = max(self.peak_kib, kib)
            self.done.wait(0.02)


def wait_measured(proc: subprocess.Popen[Any], started: float, sampler: _RssSampler) -> Sample:
    """Wait for ``proc`` to exit, read its accounting on the zombie, then reap it."""
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    cpu = _cpu_s(proc.pid)
    disk = _write_bytes(proc.pid)
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = sampler.peak_kib / 1024 if sampler.peak_kib else None
    return Sample(wall, proc.returncode, cpu, rss, disk)


class Measured:
    """A capturing process started now; ``finish()`` returns its :class:`Sample`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd
        )
        self.sampler = _RssSampler(self.proc.pid)
        self.sampler.start()

    def finish(self) -> Sample:
        return wait_measured(self.proc, self.started, self.sampler)


def run_measured(argv: Sequence[str], **kwargs: Any) -> Sample:
    return Measured(argv, **kwargs).finish()
