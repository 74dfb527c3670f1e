"""How one execution is confined: sandbox, limits, secrets, and what it leaves behind.

:class:`Isolation` is the plan (built from the job and the settings); its
:meth:`~Isolation.prepare` makes a :class:`Guard` for one execution: the command
line and environment to start, the child setup steps (join the cgroup, set the
rlimits, drop to ``nobody`` for the sandbox), and, once the program has ended,
the leftovers to kill and the limit that stopped it.

Nothing outlives an execution: in the sandbox its PID namespace dies with it;
outside, the execution's cgroup holds every descendant; without a cgroup, the
capturing process is a child subreaper (set by the CLI) and sweeps the orphans
that carry the execution's ID, or every orphan when it runs nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from outspool import limits as lim
from outspool.errors import SpawnError
from outspool.limits import Cgroup, Limits
from outspool.masking import Masker
from outspool.models import Stream
from outspool.process import Child, ChildSetup, check_program, prlimit_options
from outspool.sandbox import SYSTEM_PATH, Sandbox, program, sandbox_user
from outspool.warm import Warm, script
from outspool.watchdog import Watchdog

#: Set in every program's environment; recovery and the orphan sweep find processes by it.
EXECUTION_ENV = "OUTSPOOL_EXECUTION_ID"
_PR_SET_CHILD_SUBREAPER = 36
#: Where a sandbox shows the host's own files: programs there are checked on the host.
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/")
_sweep_lock = threading.Lock()
_live: set[str] = set()  # executions this process is running (for the orphan sweep)
_subreaper = False


@dataclass(frozen=True, slots=True)
class Isolation:
    """What confines an execution; the default confines nothing."""

    sandbox: Sandbox | None = None
    limits: Limits = field(default_factory=Limits)
    secrets: Mapping[str, str] = field(default_factory=dict)
    cgroup: bool = True  #: use a cgroup when the machine offers one
    warm: Warm | None = None  #: a sandbox started ahead, which the job may take
    watchdog: Watchdog | None = None  #: the worker's: its cgroups hold the job's

    def prepare(
        self,
        execution_id: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None = None,
    ) -> Guard:
        """Make the execution's cgroup (if any); the guard for starting and ending it.

        In a sandbox, ``cwd`` (if given) is shown read-only as the working directory.
        A warm sandbox is taken if the job fits it, else discarded.
        """
        if self.warm is not None:
            guard = self._prepare_warm(self.warm, execution_id, argv, env, cwd)
            if guard is not None:
                return guard
            self.warm.discard()
        group = None
        if self.cgroup:
            under = self.watchdog.parents if self.watchdog is not None else None
            group = Cgroup.create(f"{lim.GROUP_PREFIX}{execution_id}", self.limits, under=under)
        program_env = {**env, **self.secrets}
        fds: tuple[int, ...] = ()
        inside = None
        if self.sandbox is not None:
            # rlimits inside, on the program only: RLIMIT_FSIZE would stop bwrap's own
            # copies of /etc's files, RLIMIT_CPU and RLIMIT_AS would count bwrap
            inside = prlimit_options(self.limits.rlimits(cgroup=group is not None))
            sandbox = replace(self.sandbox, cwd=cwd)
            wrapped = sandbox.wrap(argv, prefix=inside or ())
            argv, fds = wrapped.argv, wrapped.fds
            program_env = sandbox.environ(program_env)
        guard = Guard(self, execution_id, list(argv), program_env, group, fds=fds)
        guard.rlimits_inside = inside is not None
        return guard

    def _prepare_warm(
        self,
        warm: Warm,
        execution_id: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
    ) -> Guard | None:
        if self.sandbox is None or cwd is not None or not warm.fits(self.sandbox, self.limits):
            return None
        program_env = self.sandbox.environ({**env, **self.secrets})
        text = script(program(argv), program_env, self.limits, warm.cgroup is not None)
        if text is None:
            return None
        guard = Guard(self, execution_id, list(argv), program_env, warm.cgroup)
        guard.warm = (warm, text)
        guard.rlimits_inside = True
        return guard

    def maskers(self) -> dict[Stream, Masker]:
        """One masker per stream when there are secrets."""
        if not self.secrets:
            return {}
        return {stream: Masker(self.secrets.values()) for stream in Stream}


class Guard:
    """One execution's confinement, from before its start to after its end."""

    def __init__(
        self,
        isolation: Isolation,
        execution_id: str,
        argv: list[str],
        env: dict[str, str],
        cgroup: Cgroup | None,
        *,
        fds: tuple[int, ...] = (),
    ) -> None:
        self.isolation = isolation
        self.execution_id = execution_id
        self.argv = argv
        self.env = env
        self.cgroup = cgroup
        self.fds = fds  #: descriptors the child inherits (the sandbox's /etc files)
        self.warm: tuple[Warm, bytes] | None = None  #: a warm sandbox and the job's script
        self.rlimits_inside = False  #: the sandbox sets the rlimits, not the child's setup
        self.cpu_seconds = 0.0
        self.hit: str | None = None  # the limit the cgroup enforced, read before removing it
        with _sweep_lock:
            _live.add(execution_id)

    @property
    def sandboxed(self) -> bool:
        return self.isolation.sandbox is not None

    def setup(self) -> ChildSetup:
        """The child's steps before the program, in order: cgroup, rlimits, user.

        ``bwrap --die-with-parent`` gives a sandbox the parent-death signal itself; a
        worker's watchdog kills a job in its cgroup, which then needs no such signal.
        """
        watched = self.cgroup is not None and self.isolation.watchdog is not None
        joins = self.cgroup.thread_joins(self.isolation.limits) if self.cgroup else ()
        return ChildSetup(
            cgroup_procs=self.cgroup.procs_files() if self.cgroup is not None and not joins else (),
            thread_joins=joins,
            rlimits=()
            if self.rlimits_inside
            else tuple(self.isolation.limits.rlimits(cgroup=self.cgroup is not None)),
            user=sandbox_user() if self.sandboxed else None,
            die_with_parent=not self.sandboxed and not watched,
        )

    def check_program(self, command: Sequence[str]) -> None:
        """In a sandbox, refuse a program that is not there at once, as outside one (a
        warm sandbox's ``sh`` and a cold one's ``bwrap`` would each say it their own way).
        The system inside is the host's: a name looked up on ``PATH`` or a path under
        ``/usr``, ``/bin`` or ``/sbin`` is checked on the host; any other path is not."""
        if not self.sandboxed or not command:
            return
        name = program(command)[0]
        if os.sep in name and not name.startswith(_SYSTEM_DIRS):
            return
        try:
            check_program(name, {"PATH": SYSTEM_PATH}, None)
        except FileNotFoundError:
            raise SpawnError(f"command not found: {name}") from None
        except PermissionError:
            raise SpawnError(f"permission denied: {name}") from None

    def begin_warm(self) -> Child | None:
        """Start the program in its warm sandbox; None if it has none."""
        if self.warm is None:
            return None
        warm, text = self.warm
        self.warm = None
        return warm.begin(text, self.isolation.limits)

    def started(self) -> None:
        """The child has started (or failed to): close the descriptors it inherited."""
        fds, self.fds = self.fds, ()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def signal_inside(self, pid: int, sig: int) -> bool:
        """Signal a sandboxed program (not ``bwrap``, which would kill it at once)."""
        targets = [p for p in self._members(pid) if p != pid]
        for target in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, sig)
        return bool(targets)

    def _members(self, pid: int) -> list[int]:
        if self.cgroup is not None:
            return self.cgroup.pids()
        return descendants(pid)

    def end(self) -> None:
        """After the program ended: kill whatever it left behind, remove the cgroup."""
        self.started()
        if self.warm is not None:  # never started
            self.warm[0].discard()
            self.warm = None
        try:
            if self.cgroup is not None:
                self.hit = self.cgroup.hit()
                self.cgroup.kill_all()
                self.cgroup.remove()
            elif not self.sandboxed:
                sweep_orphans(self.execution_id)
        finally:
            with _sweep_lock:
                _live.discard(self.execution_id)

    def stopped_by(self, returncode: int | None) -> str | None:
        return lim.stopped_by(self.isolation.limits, self.hit, returncode, self.cpu_seconds)


def become_subreaper() -> None:
    """Orphaned descendants of our programs become our children, not init's (CLI only)."""
    global _subreaper  # noqa: PLW0603 - one flag per process, like the prctl itself
    libc = ctypes.CDLL(None, use_errno=True)
    _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (ppid := _parent(int(name))) is not None:
            children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _execution_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(EXECUTION_ENV.encode() + b"="):
                    return item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
    return None


def _children(pid: int) -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and _parent(int(n)) == pid]


def sweep_orphans(execution_id: str, rounds: int = 50) -> None:
    """Kill and reap the orphans ``execution_id`` left to us (a child subreaper).

    An orphan that cleared its environment cannot be attributed: it is killed
    when no other execution of this process is running.
    """
    if not _subreaper:
        return
    with _sweep_lock:
        ours = {execution_id} if _live - {execution_id} else {execution_id, None}
        for _ in range(rounds):
            orphans = [p for p in _children(os.getpid()) if _execution_of(p) in ours]
            if not orphans:
                return
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
