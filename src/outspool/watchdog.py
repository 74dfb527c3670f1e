"""A worker's watchdog: when the worker dies, every process of its executions dies too.

A worker makes one cgroup of its own (:func:`outspool.limits.nest`) and its
executions' cgroups inside it, and starts one watchdog, a ``sh`` in a session of
its own that waits for the end of a pipe whose only writer is the worker. However
the worker ends (SIGKILL included), the kernel closes that pipe; the watchdog then
stops new processes in the worker's cgroup (``pids.max`` 0), kills every process
in it and in its executions' cgroups until it can remove them all, and removes the
worker's cgroup. An execution's process that joins its cgroup while this runs
keeps its cgroup from being removed and is killed on the next round; one that
comes after finds the cgroup gone and never starts its program.

This replaces, for a job with a cgroup, the parent-death signal that each program
got from a ``setpriv`` of its own (about 1 ms of CPU per job, docs/performance.md),
and unlike that signal it also takes down the program's descendants, ``setsid``
or not. Jobs without a cgroup (none on this machine, or not writable) keep the
per-job signal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid

from outspool.limits import Parents, nest

#: Waits for EOF on stdin, then empties and removes the cgroups given as arguments.
_SCRIPT = r"""
read _ignored
for d; do [ -f "$d/pids.max" ] && echo 0 > "$d/pids.max"; done 2>/dev/null
n=0
while [ $n -lt 5000 ]; do
  for d; do
    for f in "$d"/*/cgroup.procs "$d"/cgroup.procs; do
      [ -f "$f" ] || continue
      while read -r p; do kill -9 "$p"; done < "$f"
    done
    for c in "$d"/*/; do [ -d "$c" ] && rmdir "$c"; done
    [ -d "$d" ] && rmdir "$d"
  done 2>/dev/null
  left=
  for d; do [ -d "$d" ] && left=1; done
  [ -z "$left" ] && exit 0
  n=$((n+1))
  [ $n -gt 10 ] && sleep 0.002
done
exit 1
"""


class Watchdog:
    """One worker's cgroup and the ``sh`` that empties it when the worker is gone."""

    def __init__(self, parents: Parents, proc: subprocess.Popen[bytes], fd: int) -> None:
        self.parents = parents  #: where the worker's executions' cgroups go
        self._proc = proc
        self._fd = fd  # the pipe's write end: closed, the watchdog acts

    @classmethod
    def start(cls) -> Watchdog | None:
        """Make the worker's cgroup and start its watchdog; None where there is no cgroup
        (its jobs then keep the parent-death signal each)."""
        sh = shutil.which("sh", path=os.defpath)
        if sh is None:
            return None
        parents = nest(f"outspool-worker-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if parents is None:
            return None
        dirs = [d for d in parents if d is not None]
        read_end, write_end = os.pipe()  # not inheritable: no program of ours holds it
        try:
            proc = subprocess.Popen(
                [sh, "-c", _SCRIPT, "outspool-watchdog", *dirs],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # no terminal's Ctrl-C, no killpg of ours reaches it
            )
        except OSError:
            os.close(write_end)
            for directory in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            return None
        finally:
            os.close(read_end)
        return cls(parents, proc, write_end)

    def close(self, timeout: float = 30.0) -> None:
        """The worker is done: let the watchdog empty and remove the cgroup, and reap it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)
