"""Resource limits for one program, and which of them stopped it.

Memory and processes are enforced by a cgroup made for the execution where the
machine offers one (cgroup v2 with the ``memory`` and ``pids`` controllers, or
v1's ``memory`` and ``pids`` hierarchies; creating them needs root or a
delegated subtree), else by rlimits (``RLIMIT_AS``, ``RLIMIT_NPROC``). CPU time
and file size are always rlimits (``RLIMIT_CPU``, ``RLIMIT_FSIZE``).

The cgroup also holds every process the program starts, whatever it does
(``setsid``, an empty environment, double forks), so when the execution ends
they are all found and killed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import time
from dataclasses import dataclass
from typing import Any

from outspool.errors import ConfigError
from outspool.settings import Settings

CPU_TIME = "cpu time limit"
MEMORY = "memory limit"
PROCESSES = "process limit"
FILE_SIZE = "file size limit"
TIMEOUT = "timeout"

_CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one program may use; None: no limit."""

    cpu_time: float | None = None  #: seconds of CPU (each process; SIGXCPU, then SIGKILL)
    memory: int | None = None  #: bytes of memory, all processes together
    processes: int | None = None  #: processes and threads at once
    file_size: int | None = None  #: bytes of the largest file it may write
    open_files: int | None = None  #: file descriptors per process

    def rlimits(self, cgroup: bool) -> list[tuple[int, int, int]]:
        """``(resource, soft, hard)`` to set in the child; memory and processes only
        without a cgroup."""
        chosen: list[tuple[int, int, int]] = []
        if self.cpu_time is not None:
            seconds = max(1, int(self.cpu_time + 0.999))
            chosen.append((resource.RLIMIT_CPU, seconds, seconds + 1))
        if self.file_size is not None:
            chosen.append((resource.RLIMIT_FSIZE, self.file_size, self.file_size))
        if self.open_files is not None:
            chosen.append((resource.RLIMIT_NOFILE, self.open_files, self.open_files))
        if not cgroup and self.memory is not None:
            chosen.append((resource.RLIMIT_AS, self.memory, self.memory))
        if not cgroup and self.processes is not None:
            chosen.append((resource.RLIMIT_NPROC, self.processes, self.processes))
        return chosen


@dataclass(frozen=True, slots=True)
class _Knob:
    """One controller's files in one cgroup directory."""

    directory: str
    limit_file: str
    events_file: str
    event: str  # the counter in events_file that says the limit was hit
    reason: str


def _own_path(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy holding ``controller`` ("" for v2)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _v1_dir(controller: str) -> str | None:
    mount = os.path.join(_CGROUP_ROOT, controller)
    path = _own_path(controller)
    if path is None or not os.path.exists(os.path.join(mount, "cgroup.procs")):
        return None
    return mount + path


def _v2_dir() -> str | None:
    for mount in (_CGROUP_ROOT, os.path.join(_CGROUP_ROOT, "unified")):
        controllers = os.path.join(mount, "cgroup.controllers")
        path = _own_path("")
        if path is None or not os.path.exists(controllers):
            continue
        parent = mount + path
        try:
            with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
        except OSError:
            continue
        if "memory" in enabled and "pids" in enabled:
            return parent
    return None


class Cgroup:
    """A cgroup per execution: limits memory and processes, holds every descendant."""

    def __init__(self, knobs: list[_Knob]) -> None:
        self.knobs = knobs
        self.directories = sorted({k.directory for k in knobs})

    @classmethod
    def create(
        cls, name: str, limits: Limits, set_limits: bool = True, under: Parents | None = None
    ) -> Cgroup | None:
        """Make the execution's cgroup (with a ``memory`` controller if ``limits`` has a
        memory limit) and, unless told not to yet, set its limits; None where this machine
        or user cannot. ``under``: the parents to make it in (a worker's, :func:`nest`),
        else this process's own cgroups."""
        knobs = _knobs(name, limits, under or _parents())
        if knobs is None:
            return None
        group = cls(knobs)
        try:
            for directory in group.directories:
                os.mkdir(directory)
            if set_limits:
                group.apply(limits)
        except OSError:
            group.remove()
            return None
        return group

    def apply(self, limits: Limits) -> None:
        """Set the memory and process limits (those that are not None)."""
        for knob in self.knobs:
            value = limits.memory if knob.reason == MEMORY else limits.processes
            if value is not None:
                _write(os.path.join(knob.directory, knob.limit_file), str(value))

    def procs_files(self) -> tuple[str, ...]:
        """The files a child writes ``0`` into to move itself in (before its program)."""
        return tuple(os.path.join(d, "cgroup.procs") for d in self.directories)

    def thread_joins(self, limits: Limits) -> tuple[tuple[str, str], ...]:
        """``(its tasks file, the thread's own)``: how a thread of this process moves itself
        in and back out, so that the program it starts meanwhile is born in the cgroup; ()
        where that cannot be done. Only a cgroup v1 ``pids`` cgroup alone: v2 moves whole
        processes only, and a memory cgroup would charge the worker's own pages to the job
        (its OOM killer could then pick the worker). The thread counts against
        ``pids.max`` while in, so a limit of fewer than two processes joins the old way."""
        home = _thread_home()
        if home is None or len(self.knobs) != 1 or self.knobs[0].reason != PROCESSES:
            return ()
        if limits.processes is not None and limits.processes < 2:
            return ()
        tasks = os.path.join(self.knobs[0].directory, "tasks")
        return ((tasks, home),) if self.knobs[0].directory.startswith(_pids_mount()) else ()

    def pids(self) -> list[int]:
        """The processes in the cgroup (never this one: a thread of it may be passing)."""
        found: set[int] = set()
        for directory in self.directories:
            with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.procs")) as f:
                found.update(int(line) for line in f if line.strip())
        found.discard(os.getpid())
        return sorted(found)

    def hit(self) -> str | None:
        """The limit the cgroup enforced, if any (memory before processes)."""
        for knob in self.knobs:
            if _counter(os.path.join(knob.directory, knob.events_file), knob.event) > 0:
                return knob.reason
        return None

    def kill_all(self, deadline: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until none is left (new ones included)."""
        end = time.monotonic() + deadline
        while (pids := self.pids()) and time.monotonic() < end:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; best effort."""
        for directory in self.directories:
            for _ in range(100):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a killed process not yet reaped by the kernel
                    time.sleep(0.001)


#: Where executions' cgroups are made: the v2 directory, or v1's memory and pids ones.
Parents = tuple[str | None, str | None, str | None]


@functools.cache
def _parents() -> Parents:
    """Where this process's executions' cgroups go: the v2 parent, or v1's memory and pids
    parents (looked up once per process: it reads /proc/self/cgroup several times)."""
    return _v2_dir(), _v1_dir("memory"), _v1_dir("pids")


def _pids_mount() -> str:
    return os.path.join(_CGROUP_ROOT, "pids") + os.sep


@functools.cache
def _thread_home() -> str | None:
    """The ``tasks`` file of this process's v1 ``pids`` cgroup, if its threads may move
    (v1 only, and writable)."""
    _, _, pids = _parents()
    if pids is None or _parents()[0] is not None:
        return None
    home = os.path.join(pids, "tasks")
    return home if os.access(home, os.W_OK) else None


#: The name of an execution's cgroup is this prefix and its ID.
GROUP_PREFIX = "outspool-"


def left_behind() -> dict[str, Cgroup]:
    """Executions' cgroups in this process's parents, by execution ID: what a capturing
    process left when it was killed before its end, or when a killed program was not yet
    reaped by the kernel after its last try (a worker's are nested, and emptied by its
    watchdog)."""
    found: dict[str, Cgroup] = {}
    v2, memory, pids = _parents()
    for parent in (v2, memory, pids):
        if parent is None:
            continue
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            execution_id = name.removeprefix(GROUP_PREFIX)
            if name == execution_id or not execution_id.isalnum() or execution_id in found:
                continue  # not an execution's (a worker's nest is outspool-worker-PID-...)
            # a memory limit names every controller's directory; those that exist are kept
            knobs = _knobs(name, Limits(memory=1), (v2, memory, pids))
            if knobs is not None:
                kept = [k for k in knobs if os.path.isdir(k.directory)]
                found[execution_id] = Cgroup(kept)
    return found


def nest(name: str) -> Parents | None:
    """Make a cgroup ``name`` in each of this process's parents, to hold executions'
    cgroups (a worker's, watched by ``watchdog.py``); None where it cannot."""
    v2, memory, pids = _parents()
    if v2 is None and (memory is None or pids is None or not os.access(memory, os.W_OK)):
        return None
    made: list[str] = []
    try:
        if v2 is not None:
            made.append(os.path.join(v2, name))
            os.mkdir(made[-1])
            _write(os.path.join(made[-1], "cgroup.subtree_control"), "+memory +pids")
            return made[-1], None, None
        for parent in (memory, pids):
            assert parent is not None
            made.append(os.path.join(parent, name))
            os.mkdir(made[-1])
    except OSError:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        return None
    return None, made[0], made[1]


def _knobs(name: str, limits: Limits, parents: Parents) -> list[_Knob] | None:
    """The controllers' files of the execution's cgroup; with v1, the memory hierarchy only
    for a memory limit (a memory cgroup made and removed costs the kernel about half a
    millisecond of CPU, most of a trivial job's cgroup cost; the pids one holds every
    process either way)."""
    v2, memory, pids = parents
    if v2 is not None:
        d = os.path.join(v2, name)
        return [
            _Knob(d, "memory.max", "memory.events", "oom_kill", MEMORY),
            _Knob(d, "pids.max", "pids.events", "max", PROCESSES),
        ]
    if memory is None or pids is None or not os.access(memory, os.W_OK):
        return None
    knobs = [_Knob(os.path.join(pids, name), "pids.max", "pids.events", "max", PROCESSES)]
    if limits.memory is not None:  # first: memory is the limit named when both were hit
        memory_knob = _Knob(
            os.path.join(memory, name),
            "memory.limit_in_bytes",
            "memory.oom_control",
            "oom_kill",
            MEMORY,
        )
        knobs.insert(0, memory_knob)
    return knobs


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _counter(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def stopped_by(
    limits: Limits, cgroup_hit: str | None, returncode: int | None, cpu_seconds: float
) -> str | None:
    """Which limit stopped the program, judged after it ended; None if none did.

    ``cgroup_hit`` is what the execution's cgroup enforced (:meth:`Cgroup.hit`).
    """
    if cgroup_hit is not None and returncode != 0:
        return cgroup_hit
    if returncode is None or returncode == 0:
        return None
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if limits.cpu_time is not None and (
        sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_seconds >= limits.cpu_time)
    ):
        return CPU_TIME
    if limits.file_size is not None and sig == signal.SIGXFSZ:
        return FILE_SIZE
    return None


def _ceilings(settings: Settings) -> Limits:
    return Limits(
        cpu_time=settings.limit_cpu_time,
        memory=settings.limit_memory,
        processes=settings.limit_processes,
        file_size=settings.limit_file_size,
        open_files=settings.limit_open_files,
    )


#: A job's limit fields and the options that set them.
LIMIT_OPTIONS = {
    "cpu_time": "--cpu-time",
    "memory": "--memory",
    "max_processes": "--max-processes",
    "max_file_size": "--max-file-size",
}
_NAMES = dict(
    zip(("cpu_time", "memory", "processes", "file_size"), LIMIT_OPTIONS.values(), strict=True)
)


def check_asked(asked: Limits, settings: Settings) -> None:
    """Refuse a job asking for more than a ceiling allows."""
    ceilings = _ceilings(settings)
    for name, option in _NAMES.items():
        want, most = getattr(asked, name), getattr(ceilings, name)
        if want is not None and most is not None and want > most:
            raise ConfigError(f"{option} {want} is above this machine's ceiling ({most})")


def effective(asked: Limits, settings: Settings) -> Limits:
    """What a worker enforces: the job's ask, else the default, never above the ceiling."""
    ceilings = _ceilings(settings)
    defaults = Limits(
        cpu_time=settings.default_cpu_time,
        memory=settings.default_memory,
        processes=settings.default_processes,
        file_size=settings.default_file_size,
    )
    values: dict[str, Any] = {}
    for name in (*_NAMES, "open_files"):
        want = getattr(asked, name)
        if want is None:
            want = getattr(defaults, name)
        most = getattr(ceilings, name)
        values[name] = most if want is None else want if most is None else min(want, most)
    return Limits(**values)
