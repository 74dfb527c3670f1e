"""Spawning and stopping programs: each in its own process group.

Stopping a program means its whole group: SIGTERM, a grace period, then
SIGKILL. On Linux the child also gets SIGKILL if the process that started it
dies (the parent-death signal), so a killed capture leaves no orphans behind;
a worker's jobs have its watchdog instead (``watchdog.py``).

What the child does before the program starts (join its cgroup, lower its
rlimits, become another user, the parent-death signal) is described as data, a
:class:`ChildSetup`, and done by small system programs that exec one another
(``sh`` for the cgroup, ``prlimit``, ``setpriv``), so that this process starts
the child with ``vfork``. Running the steps as Python between fork and exec
instead (``preexec_fn``) forces a real ``fork`` of this process, which on a
virtual machine costs several milliseconds of CPU and tens of wall: most of a
trivial job (docs/performance.md). That way is kept for what the helpers cannot
do: a pseudo-terminal, a caller's own setup step, signals this process ignores,
or helpers missing from the system. On cgroup v1 the starting thread may join
the cgroup itself for the spawn (``ChildSetup.thread_joins``): no ``sh`` then.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import pty
import resource
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from outspool.errors import SpawnError
from outspool.models import Stream

if TYPE_CHECKING:
    from outspool.isolation import Guard

_PR_SET_PDEATHSIG = 1
_F_SETPIPE_SZ = 1031
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


@dataclass
class Child:
    """A running program: its process, and the fds its output arrives on."""

    proc: subprocess.Popen[bytes]
    fds: dict[int, Stream]  # fd -> the stream it carries (a pty carries both, as stdout)
    pidfd: int | None
    guard: Guard | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the program's process group; False if it is gone.

        In a sandbox, only SIGKILL goes to ``bwrap`` (whose death ends the
        sandbox); other signals go to the processes inside.
        """
        if self.guard is not None and self.guard.sandboxed and sig != signal.SIGKILL:
            return self.guard.signal_inside(self.proc.pid, sig)
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def close(self) -> None:
        for fd in list(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


#: Signals a program starts with at their default action, whatever this process does.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: prlimit's option for each resource a :class:`ChildSetup` may lower.
_PRLIMIT = {
    resource.RLIMIT_CPU: "cpu",
    resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_NOFILE: "nofile",
    resource.RLIMIT_AS: "as",
    resource.RLIMIT_NPROC: "nproc",
}
#: Joins the cgroups named before ``--`` (their cgroup.procs files), then runs the rest.
_JOIN = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 126; shift; done; shift; exec "$@"'


@dataclass(frozen=True, slots=True)
class ChildSetup:
    """What a child does, in this order, before the program runs."""

    cgroup_procs: tuple[str, ...] = ()  #: ``cgroup.procs`` files to join
    #: ``(tasks file, the thread's own)``: cgroups the starting thread joins for the spawn
    thread_joins: tuple[tuple[str, str], ...] = ()
    rlimits: tuple[tuple[int, int, int], ...] = ()  #: ``(resource, soft, hard)``
    user: tuple[int, int] | None = None  #: ``(uid, gid)`` to become, with no other groups
    die_with_parent: bool = True  #: SIGKILL once the thread that started it has ended

    def run(self) -> None:
        """The steps in Python, in the child between fork and exec (the slow way)."""
        for path in self.cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        for what, soft, hard in self.rlimits:
            resource.setrlimit(what, (soft, hard))
        if self.user is not None:
            uid, gid = self.user
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        if self.die_with_parent:  # after the change of user, which clears it
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def helpers(self) -> list[str] | None:
        """The same steps as programs that exec one another, then the program (None if
        a helper is missing here)."""
        tools = _helpers()
        prefix: list[str] = []
        if self.cgroup_procs:
            if tools["sh"] is None:
                return None
            prefix += [tools["sh"], "-c", _JOIN, "outspool-setup", *self.cgroup_procs, "--"]
        limiting = prlimit_options(self.rlimits)
        if limiting is None:
            return None
        prefix += limiting
        if self.user is not None or self.die_with_parent:
            if tools["setpriv"] is None:
                return None
            prefix.append(tools["setpriv"])
            if self.user is not None:
                prefix += ["--reuid", str(self.user[0]), "--regid", str(self.user[1])]
                prefix.append("--clear-groups")
            if self.die_with_parent:
                prefix += ["--pdeathsig", "KILL"]
            prefix.append("--")
        return prefix


def prlimit_options(rlimits: Sequence[tuple[int, int, int]]) -> list[str] | None:
    """``prlimit`` and its options setting ``rlimits``, then ``--`` ([] for none; None if
    ``prlimit`` is missing here or cannot set one of them)."""
    if not rlimits:
        return []
    tool = _helpers()["prlimit"]
    if tool is None or any(r[0] not in _PRLIMIT for r in rlimits):
        return None
    return [tool, *(f"--{_PRLIMIT[r]}={s}:{h}" for r, s, h in rlimits), "--"]


@cache
def _helpers() -> dict[str, str | None]:
    found = {name: shutil.which(name, path=os.defpath) for name in ("sh", "prlimit", "setpriv")}
    setpriv = found["setpriv"]
    if setpriv is not None and not _knows(setpriv, b"--pdeathsig"):
        found["setpriv"] = None  # util-linux before 2.33: the Python way
    return found


def _knows(program: str, option: bytes) -> bool:
    """Whether ``program --help`` lists ``option`` (asked once per process)."""
    try:
        done = subprocess.run([program, "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return option in done.stdout


def _signals_ignored() -> bool:
    """True if this process ignores a signal the program must start with at its default
    (an ignored signal stays ignored across exec)."""
    return any(signal.getsignal(sig) == signal.SIG_IGN for sig in _DEFAULT_SIGNALS[1:])


def _slow_setup(
    setup: ChildSetup, use_pty: bool, extra: Callable[[], None] | None
) -> Callable[[], None]:
    def run() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if extra is not None:
            extra()
        setup.run()
        if use_pty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    return run


def check_program(program: str, env: Mapping[str, str], cwd: str | None) -> None:
    """Raise what exec would (FileNotFoundError, PermissionError) for ``program``, before a
    helper that runs it hides the error in the program's output."""
    if cwd is not None and not os.path.isdir(cwd):
        return  # starting the first helper fails, and says so
    if os.sep in program:
        candidates = [os.path.join(cwd or os.getcwd(), program)]
    else:
        here = cwd or os.getcwd()  # a relative directory in PATH is the child's
        candidates = [os.path.join(here, d, program) for d in os.get_exec_path(dict(env))]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        if any(os.path.isdir(c) for c in candidates):
            raise PermissionError(program)
        raise FileNotFoundError(program)
    if not any(os.access(c, os.X_OK) for c in found):
        raise PermissionError(program)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    use_pty: bool = False,
    stdin: int | None = subprocess.DEVNULL,
    pipe_size: int = 1 << 20,
    setup: ChildSetup = ChildSetup(),
    extra_setup: Callable[[], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Start ``argv`` in a new session (its own process group) with its output piped.

    In the child, ``extra_setup`` (a Python step, which takes the slow way) runs first,
    then ``setup`` (by helper programs where it can, see the module). ``pass_fds`` are
    inherited by the child (the caller closes them).
    """
    if not argv:
        raise SpawnError("no command given")
    helpers = None
    if not use_pty and extra_setup is None and not _signals_ignored():
        helpers = setup.helpers()
    preexec = None if helpers is not None else _slow_setup(setup, False, extra_setup)
    try:
        with _thread_in(setup.thread_joins):  # a v1 cgroup joined by this thread
            if use_pty:
                slow = _slow_setup(setup, use_pty, extra_setup)
                proc, fds = _spawn_pty(argv, env, cwd, slow, pass_fds)
            else:
                if helpers:
                    check_program(argv[0], env, cwd)
                proc = subprocess.Popen(
                    [*(helpers or ()), *argv],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(env),
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=preexec,
                    pass_fds=pass_fds,
                )
                assert proc.stdout is not None and proc.stderr is not None
                fds = {os.dup(proc.stdout.fileno()): Stream.STDOUT}
                fds[os.dup(proc.stderr.fileno())] = Stream.STDERR
                proc.stdout.close()
                proc.stderr.close()
        for fd in fds:
            _enlarge_pipe(fd, pipe_size)
    except FileNotFoundError:
        raise SpawnError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise SpawnError(f"permission denied: {argv[0]}") from None
    except NotADirectoryError:
        raise SpawnError(f"not a directory: {cwd}") from None
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    for fd in fds:
        os.set_blocking(fd, False)
    pidfd: int | None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):
        pidfd = None
    return Child(proc, fds, pidfd)


@contextlib.contextmanager
def _thread_in(joins: Sequence[tuple[str, str]]) -> Iterator[None]:
    """This thread in the cgroups of ``joins`` meanwhile, so that a child it starts is
    born there: no window in which the program could start a process outside. The way
    back is taken whatever happens; if it fails, this process stops (a thread of the
    worker left in a job's cgroup would be killed with the job)."""
    if not joins:
        yield
        return
    tid = str(threading.get_native_id()).encode()
    joined: list[str] = []
    try:
        for tasks, _ in joins:
            _write_tid(tasks, tid)
            joined.append(tasks)
        yield
    finally:
        for tasks, home in joins:
            if tasks in joined:
                try:
                    _write_tid(home, tid)
                except OSError as exc:
                    os.write(2, f"outspool: cannot leave {tasks}: {exc}; stopping\n".encode())
                    os._exit(70)


def _write_tid(tasks: str, tid: bytes) -> None:
    fd = os.open(tasks, os.O_WRONLY)
    try:
        os.write(fd, tid)
    finally:
        os.close(fd)


def _spawn_pty(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    setup: Callable[[], None],
    pass_fds: Sequence[int],
) -> tuple[subprocess.Popen[bytes], dict[int, Stream]]:
    master, slave = pty.openpty()
    try:
        _copy_window_size(master)
        proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=setup,
            pass_fds=pass_fds,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return proc, {master: Stream.STDOUT}


def _copy_window_size(master: int) -> None:
    for fd in (sys.stdout.fileno, sys.stderr.fileno):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            size = fcntl.ioctl(fd(), termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            return
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))


def _enlarge_pipe(fd: int, size: int) -> None:
    """Bigger pipes mean fewer reads and fewer wake-ups; best effort."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)


def is_eof_error(exc: OSError) -> bool:
    """A pty master reports the end of its slave as EIO."""
    return exc.errno == errno.EIO
