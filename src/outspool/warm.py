"""Warm sandboxes: a job's sandbox built before the job is claimed.

Building a sandbox (namespaces, mounts) keeps a start waiting on the kernel for
most of its wall time, not on a CPU (docs/security.md, *What it costs*). A worker
therefore starts the sandbox of its next job ahead, with ``sh -s`` inside waiting
for a script on its standard input, and its own cgroup. When a job is claimed,
its limits are written to that cgroup and the script is written to the pipe:
one ``export`` per variable of the job's environment, ``exec`` of its command
(through ``prlimit`` when rlimits apply, as in a cold sandbox). The program then
starts at once, with the environment, user, rlimits and exit status a cold
sandbox gives it (``PWD`` is ``bwrap``'s in both).

A warm sandbox has no network, no ``--cwd`` and no pseudo-terminal, and gets the
same cgroup controllers as a cold one would (``memory`` only when a memory limit
applies): a job that needs anything else, or whose environment has a name that
is not a shell identifier, starts a sandbox of its own as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from dataclasses import dataclass

from outspool.errors import SpawnError
from outspool.limits import Cgroup, Limits
from outspool.process import Child, ChildSetup, prlimit_options, spawn
from outspool.sandbox import SYSTEM_PATH, Sandbox, sandbox_user

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote(value: str) -> bytes:
    """``value`` as one word of ``sh``, whatever its bytes (no NUL: the kernel refuses)."""
    return b"'" + os.fsencode(value).replace(b"'", b"'\\''") + b"'"


def script(argv: list[str], env: dict[str, str], limits: Limits, cgroup: bool) -> bytes | None:
    """The launcher's script for a job; None if ``sh`` cannot set this environment. The
    program's standard input is ``/dev/null``, as a worker's job's is."""
    if not all(_NAME.match(name) for name in env):
        return None
    prefix = prlimit_options(limits.rlimits(cgroup=cgroup))
    if prefix is None:
        return None
    lines = [b"export " + quote(f"{name}={value}") for name, value in env.items()]
    command = b" ".join(quote(word) for word in [*prefix, *argv])
    lines.append(b"exec " + command + b" </dev/null")  # one line: parsed whole, then run
    return b"\n".join(lines) + b"\n"


@dataclass
class Warm:
    """One sandbox started ahead, waiting for its job's script."""

    box: Sandbox
    child: Child  #: the running ``bwrap``, its output pipes (the job's)
    script_fd: int  #: where the script is written (the launcher's standard input)
    cgroup: Cgroup | None
    memory: bool  #: whether ``cgroup`` limits memory

    @classmethod
    def start(cls, box: Sandbox, memory: bool, pipe_size: int) -> Warm | None:
        """Start one, with a cgroup like a cold one's; None where it cannot start."""
        probe = Limits(memory=1 if memory else None)
        group = Cgroup.create(f"outspool-warm-{uuid.uuid4().hex}", probe, set_limits=False)
        wrapped = box.wrap(["/bin/sh", "-s"])
        read_end, write_end = os.pipe()
        joins = group.thread_joins(probe) if group is not None else ()  # no sh on cgroup v1
        setup = ChildSetup(
            cgroup_procs=group.procs_files() if group is not None and not joins else (),
            thread_joins=joins,
            user=sandbox_user(),
            die_with_parent=False,
        )
        try:
            child = spawn(
                wrapped.argv,
                env={"PATH": SYSTEM_PATH},
                stdin=read_end,
                pipe_size=pipe_size,
                setup=setup,
                pass_fds=wrapped.fds,
            )
        except Exception:
            os.close(write_end)
            if group is not None:
                group.remove()
            return None
        finally:
            os.close(read_end)
            wrapped.close()
        return cls(box, child, write_end, group, memory and group is not None)

    def fits(self, box: Sandbox, limits: Limits) -> bool:
        """Whether a job in ``box`` under ``limits`` can take this sandbox."""
        return box == self.box and (limits.memory is not None) == self.memory

    def begin(self, text: bytes, limits: Limits) -> Child:
        """Hand the job (its :func:`script`) to the launcher: the program starts."""
        if self.cgroup is not None:
            try:
                self.cgroup.apply(limits)
            except OSError as exc:
                self.discard()
                raise SpawnError(f"cannot set the job's limits: {exc.strerror or exc}") from None
        view = memoryview(text)
        try:
            while view:  # a pipe holds 64 KiB: a longer script waits for the launcher
                view = view[os.write(self.script_fd, view) :]
        except OSError:
            pass  # the launcher is gone: its output and exit status say why
        finally:
            os.close(self.script_fd)
            self.script_fd = -1
        return self.child

    def discard(self) -> None:
        """Not used: end the launcher (EOF on its script), reap it, remove its cgroup."""
        if self.script_fd >= 0:
            os.close(self.script_fd)
            self.script_fd = -1
        with contextlib.suppress(OSError):
            self.child.proc.kill()
        self.child.proc.wait()
        self.child.close()
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup.remove()


class WarmPool:
    """Up to ``size`` warm sandboxes of one kind (a worker's: one per slot), kept ready by
    a thread of their own, so that building them never holds up the worker's loop."""

    def __init__(self, box: Sandbox, memory: bool, pipe_size: int, size: int) -> None:
        self.box = box
        self.memory = memory
        self.pipe_size = pipe_size
        self.size = size
        self._ready: list[Warm] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._fill, name="outspool-warm", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        """Start sandboxes while fewer than ``size`` wait (stops for good at the first that
        cannot start: the jobs then build their own)."""
        while True:
            with self._changed:
                while not self._closed and len(self._ready) >= self.size:
                    self._changed.wait()
                if self._closed:
                    return
            warm = Warm.start(self.box, self.memory, self.pipe_size)
            if warm is None:
                return
            with self._changed:
                if self._closed:
                    break
                self._ready.append(warm)
        warm.discard()

    def take(self, box: Sandbox, limits: Limits) -> Warm | None:
        """A waiting sandbox a job in ``box`` under ``limits`` can take, if any."""
        with self._changed:
            for i, warm in enumerate(self._ready):
                if warm.fits(box, limits):
                    self._changed.notify()
                    return self._ready.pop(i)
        return None

    def close(self) -> None:
        """Stop building and discard every waiting sandbox."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()
        with self._changed:
            ready, self._ready = self._ready, []
        for warm in ready:
            warm.discard()
