"""The cgroup v2 path of ``limits.py`` against a directory laid out as a cgroup2 mount.

The development machine runs cgroup v1 with ``memory`` and ``pids`` bound there, so no
real cgroup2 hierarchy here has those controllers (docs/security.md). What can be
checked without one: which file names the v2 path reads and writes, that it is chosen
only where the worker's own cgroup delegates both controllers, and how it names the
limit that was hit. What the kernel does with those files is not checked here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from outspool import limits
from outspool.limits import Cgroup, Limits


@pytest.fixture
def cgroup2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cgroup2-shaped tree at a fake root; the worker's own cgroup directory in it."""
    own = limits._own_path("")  # this process's v2 path, as the real code reads it
    if own is None:
        pytest.skip("no v2 line in /proc/self/cgroup")
    mine = tmp_path / own.lstrip("/")
    mine.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (mine / "cgroup.subtree_control").write_text("memory pids\n")
    monkeypatch.setattr(limits, "_CGROUP_ROOT", str(tmp_path))
    limits._parents.cache_clear()
    yield mine
    limits._parents.cache_clear()


def test_v2_makes_the_execution_cgroup_with_both_limits(cgroup2: Path) -> None:
    group = Cgroup.create("outspool-e1", Limits(memory=64 << 20, processes=16))
    assert group is not None
    made = cgroup2 / "outspool-e1"
    assert (made / "memory.max").read_text() == str(64 << 20)
    assert (made / "pids.max").read_text() == "16"
    assert group.procs_files() == (str(made / "cgroup.procs"),)
    assert group.hit() is None
    (made / "pids.events").write_text("max 3\n")
    assert group.hit() == limits.PROCESSES
    (made / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert group.hit() == limits.MEMORY  # memory is named first when both were hit


def test_v2_is_not_used_without_both_controllers_delegated(cgroup2: Path) -> None:
    (cgroup2 / "cgroup.subtree_control").write_text("memory\n")
    limits._parents.cache_clear()
    assert limits._parents()[0] is None
    assert not os.path.exists(cgroup2 / "outspool-e2")


def test_v2_nests_a_workers_executions_in_its_own_cgroup(cgroup2: Path) -> None:
    """The worker's cgroup (watched by ``watchdog.py``) delegates both controllers to the
    executions' cgroups made in it; a job there is not joined by a thread (v2 moves whole
    processes only)."""
    parents = limits.nest("outspool-worker-1")
    worker = cgroup2 / "outspool-worker-1"
    assert parents == (str(worker), None, None)
    assert (worker / "cgroup.subtree_control").read_text() == "+memory +pids"
    group = Cgroup.create("outspool-e3", Limits(processes=16), under=parents)
    assert group is not None
    assert (worker / "outspool-e3" / "pids.max").read_text() == "16"
    assert group.thread_joins(Limits(processes=16)) == ()
