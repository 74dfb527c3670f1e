"""The sandbox: each program in its own bubblewrap (``bwrap``) namespaces.

Inside, a program runs as ``nobody`` in new user, PID, IPC, UTS, cgroup and
(unless the job asks and the worker allows) network namespaces, in a new
session, and dies with the process that started it. It sees the system
read-only (``/usr``, ``/bin``, ``/lib*`` and the parts of ``/etc`` programs
need), a fresh ``/proc`` of its own PID namespace, a minimal ``/dev``, and three
fresh size-bounded tmpfs, its only writable places: ``/tmp``, its working
directory ``/job`` and ``/dev/shm``. Nothing else: not the store, not the
worker's home, configuration or virtual environment, not other jobs.

Each mount costs the kernel time in which the start waits (docs/security.md,
*What it costs*), so the files of ``/etc`` are copied in by ``bwrap`` from
descriptors this process opens (``--file``), with no mount each.

When the capturing process is root, ``bwrap`` itself is started as ``nobody``
(it then builds the namespaces as an unprivileged user), so the program is
``nobody`` outside the sandbox too, never root. Otherwise it runs as the
capturing user outside and ``nobody`` inside.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

#: The user and group a sandboxed program runs as (``nobody``/``nogroup``).
SANDBOX_UID = 65534
SANDBOX_GID = 65534
#: The program's working directory inside the sandbox, unless the job names one.
WORKDIR = "/job"
#: ``PATH`` inside: the system's interpreters, not outspool's virtual environment.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Parts of /etc that programs read: the loader, users, time zone, names, certificates.
_ETC = (
    "alternatives",
    "ca-certificates",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
)
_TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(slots=True)
class Wrapped:
    """A ``bwrap`` command line and the descriptors it reads ``/etc``'s files from: start
    it with them inherited (``pass_fds``), then :meth:`close` them."""

    argv: list[str]
    fds: tuple[int, ...] = field(default=())

    def close(self) -> None:
        fds, self.fds = self.fds, ()
        for fd in fds:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How one program is confined."""

    network: bool = False  #: keep the host's network (the job asked and the worker allows)
    disk: int = 256 << 20  #: bytes each of /tmp and the working directory may hold
    cwd: str | None = None  #: a host directory shown read-only as the working directory

    def wrap(self, argv: Sequence[str], prefix: Sequence[str] = ()) -> Wrapped:
        """The ``bwrap`` command line that runs ``argv`` inside this sandbox (after
        ``prefix``, such as ``prlimit``: limits that must not bind ``bwrap`` itself), with
        the descriptors of the ``/etc`` files it copies in (open: the caller closes them)."""
        files, fds = _etc_files()
        # the root and /dev are bwrap's own tmpfs, unbounded: read-only once built
        opts = [*self._options(), *files, "--remount-ro", "/dev", "--remount-ro", "/"]
        return Wrapped([bwrap_path(), *opts, "--", *prefix, *program(argv)], fds)

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """The program's environment adjusted to the sandbox's file system: ``HOME`` is
        the writable ``/job``, also when the working directory is a read-only ``--cwd``."""
        return {**env, "PATH": SYSTEM_PATH, "HOME": WORKDIR, "TMPDIR": "/tmp"}

    def _options(self) -> list[str]:
        opts = ["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "outspool"]
        opts += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        if self.network:
            opts.append("--share-net")
        opts += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
        opts += _system_links()
        size = str(self.disk)
        opts += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", WORKDIR]
        opts += ["--size", size, "--tmpfs", "/dev/shm"]  # POSIX shared memory, semaphores
        if self.cwd is not None:
            opts += ["--ro-bind", self.cwd, self.cwd, "--chdir", self.cwd]
        else:
            opts += ["--chdir", WORKDIR]
        return opts


@functools.cache
def _system_links() -> tuple[str, ...]:
    """/bin, /lib* as on the host (symlinks into /usr, or read-only binds), and /etc's
    directories (read-only binds)."""
    opts: list[str] = []
    for name in _TOP:
        path = "/" + name
        if os.path.islink(path):
            opts += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            opts += ["--ro-bind", path, path]
    for name in _ETC:
        path = "/etc/" + name
        if os.path.isdir(path):
            opts += ["--ro-bind", path, path]
    return tuple(opts)


def _etc_files() -> tuple[list[str], tuple[int, ...]]:
    """``--file`` options copying /etc's files (a symlink's target) into the sandbox, and
    the descriptors they name. Only files anyone may read are copied (``bwrap`` reads them
    through our descriptor, as whoever we are); any other is bound, unreadable as before."""
    opts: list[str] = []
    fds: list[int] = []
    for name in _ETC:
        path = "/etc/" + name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue  # missing (or a directory opened elsewhere): nothing to copy
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) or not mode & stat.S_IROTH:
            os.close(fd)
            if stat.S_ISREG(mode):
                opts += ["--ro-bind", path, path]
            continue
        fds.append(fd)
        opts += ["--perms", format(stat.S_IMODE(mode), "04o"), "--file", str(fd), path]
    return opts, tuple(fds)


def program(argv: Sequence[str]) -> list[str]:
    """``argv`` as the sandbox can run it: our own interpreter becomes the system's."""
    if argv and argv[0] == sys.executable:
        return ["python3", *argv[1:]]
    return list(argv)


@functools.cache
def bwrap_path() -> str:
    return shutil.which("bwrap") or "bwrap"


def sandbox_user() -> tuple[int, int] | None:
    """The ``(uid, gid)`` that starts ``bwrap``: root starts it as ``nobody``, never as root;
    anyone else as themselves (None)."""
    return (SANDBOX_UID, SANDBOX_GID) if os.geteuid() == 0 else None


@functools.cache
def problem() -> str | None:
    """Why this machine cannot sandbox programs (one line), or None if it can."""
    if shutil.which("bwrap") is None:
        return (
            "bubblewrap is not installed: install it (Debian/Ubuntu: apt-get install "
            "bubblewrap) or set OUTSPOOL_SANDBOX=none to run jobs unsandboxed knowingly"
        )
    probe = Sandbox().wrap(["true"])
    user = sandbox_user()
    try:
        done = subprocess.run(
            probe.argv,
            pass_fds=probe.fds,
            capture_output=True,
            timeout=30,
            env={"PATH": SYSTEM_PATH},
            user=None if user is None else user[0],
            group=None if user is None else user[1],
            extra_groups=None if user is None else [],
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = str(exc)
    else:
        if done.returncode == 0:
            return None
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit code {done.returncode}"
    finally:
        probe.close()
    return (
        f"bwrap cannot create a sandbox here ({detail}); allow unprivileged user "
        "namespaces or set OUTSPOOL_SANDBOX=none to run jobs unsandboxed knowingly"
    )
