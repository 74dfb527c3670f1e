"""Whether a capturing process is alive, asked of the kernel rather than of the clock.

A heartbeat can be late while its process is perfectly well: another process
holds SQLite's write lock past ``heartbeat_timeout``, the disk is full, the
network is slow. Declaring such an execution ``lost`` and killing its program
would destroy a healthy run. So each capturing process records its identity
when it registers: the boot ID, its PID namespace, its PID and its start time
in clock ticks since boot. Recovery running in the same PID namespace of the
same boot then knows for certain: the process is alive if ``/proc/<pid>/stat``
shows the same start time, and dead otherwise (gone, or its PID reused by
another process). Elsewhere (another host, another container) it cannot know,
and only the heartbeat's age speaks.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

_PROC = Path("/proc")


class Liveness(enum.Enum):
    """What recovery knows about a capturing process."""

    #: Same machine and PID namespace, and the very process is still there.
    ALIVE = "alive"
    #: Same machine and PID namespace, and the process is gone (or its PID reused).
    DEAD = "dead"
    #: Another machine or namespace, or no identity recorded: only the heartbeat tells.
    UNKNOWN = "unknown"


def identity(pid: int | None = None) -> str | None:
    """``boot:namespace:pid:start`` of process ``pid`` (default: this one); None without /proc."""
    pid = os.getpid() if pid is None else pid
    space = _space()
    started = _start_ticks(pid)
    if space is None or started is None:
        return None
    return f"{space}:{pid}:{started}"


def check(recorded: str | None) -> Liveness:
    """Whether the process that recorded ``recorded`` (see :func:`identity`) is alive."""
    if not recorded:
        return Liveness.UNKNOWN
    space, _, rest = recorded.rpartition(":")  # rest: start ticks
    space, _, pid = space.rpartition(":")
    if not pid.isdigit() or not rest.isdigit() or space != _space():
        return Liveness.UNKNOWN
    return Liveness.ALIVE if _start_ticks(int(pid)) == int(rest) else Liveness.DEAD


def _space() -> str | None:
    """This boot and PID namespace: where a PID and a start time name one process."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{boot}:{namespace.removeprefix('pid:').strip('[]')}"


def _start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in ticks since boot.

    None when there is no such process, or it has exited and awaits its parent.
    """
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):  # fields[0] is field 3, the state: a zombie is dead
        return None
    return int(fields[19])
