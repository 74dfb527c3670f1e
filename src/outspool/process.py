"""Spawning and stopping programs: each in its own process group.

Stopping a program means its whole group: SIGTERM, a grace period, then
SIGKILL. On Linux the child also gets SIGKILL if the process that started it
dies (the parent-death signal), so a killed capture leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas for a capturing process (best effort).

    Each capture thread otherwise gets an arena that keeps freed read buffers,
    and a process capturing 64 programs grows by tens of MB it no longer uses.
    Called by the CLI only: a library must not change its host's allocator.
    """
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, arenas)


def _child_setup(use_pty: bool) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if use_pty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    use_pty: bool = False,
    stdin: int | None = subprocess.DEVNULL,
    pipe_size: int = 1 << 20,
    extra_setup: Callable[[], None] | None = None,
) -> Child:
    """Start ``argv`` in a new session (its own process group) with its output piped."""
    if not argv:
        raise SpawnError("no command given")
    base_setup = _child_setup(use_pty)

    def setup() -> None:
        if extra_setup is not None:
            extra_setup()  # first: a change of user clears the parent-death signal
        base_setup()

    try:
        if use_pty:
            proc, fds = _spawn_pty(argv, env, cwd, setup)
        else:
            proc = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=setup,
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


def _spawn_pty(
    argv: Sequence[str], env: Mapping[str, str], cwd: str | None, setup: Callable[[], None]
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
