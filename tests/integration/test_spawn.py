"""Starting a program: the child's setup done by helper programs (vfork) or in Python (fork).

Both ways must leave the program in the same state: its cgroup joined, its rlimits
lowered, the parent-death signal set, the same errors for a program that cannot start.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
from pathlib import Path

import pytest

from outspool.errors import SpawnError
from outspool.limits import MEMORY, PROCESSES, Cgroup, Limits
from outspool.process import Child, ChildSetup, spawn
from tests.conftest import SpawnCli
from tests.helpers import alive, wait_until

#: Prints what the setup changed: the CPU-time and open-files limits, the parent-death
#: signal is not visible, so it is tested by killing the parent (below).
REPORT = "ulimit -t; ulimit -n; echo $0"


def output(child: Child) -> bytes:
    """Everything the child printed on stdout, once it has exited."""
    child.proc.wait(30)
    out = b""
    for fd, _ in list(child.fds.items()):
        os.set_blocking(fd, True)
        while piece := os.read(fd, 65536):
            out += piece
    child.close()
    return out


@pytest.mark.parametrize("slow", [False, True], ids=["helpers", "python"])
def test_both_ways_lower_the_rlimits_and_keep_argv0(slow: bool) -> None:
    setup = ChildSetup(
        rlimits=((resource.RLIMIT_CPU, 7, 8), (resource.RLIMIT_NOFILE, 64, 64)),
        die_with_parent=True,
    )
    if not slow:
        assert setup.helpers(), "prlimit and setpriv are missing: nothing takes the fast way"
    child = spawn(
        ["sh", "-c", REPORT, "the-name"],
        env={"PATH": os.defpath},
        setup=setup,
        extra_setup=(lambda: None) if slow else None,
    )
    assert output(child) == b"7\n64\nthe-name\n"


@pytest.mark.parametrize("slow", [False, True], ids=["helpers", "python"])
def test_both_ways_join_the_cgroup_before_the_program(slow: bool) -> None:
    group = Cgroup.create(f"outspool-test-{os.getpid()}-{slow}", Limits(processes=64))
    if group is None:
        pytest.skip("this machine or user cannot make a cgroup")
    try:
        child = spawn(
            ["cat", "/proc/self/cgroup"],
            env={"PATH": os.defpath},
            setup=ChildSetup(cgroup_procs=group.procs_files()),
            extra_setup=(lambda: None) if slow else None,
        )
        joined = [line for line in output(child).splitlines() if b"outspool-test-" in line]
        assert len(joined) == len(group.directories)
    finally:
        group.kill_all()
        group.remove()


@pytest.mark.parametrize("slow", [False, True], ids=["vfork", "python"])
def test_the_starting_thread_joins_a_v1_pids_cgroup_for_the_spawn(slow: bool) -> None:
    """No ``sh``: the program, and what it starts before anything could move it, is born
    in the cgroup; the thread that started it is back in its own cgroup afterwards, and
    the cgroup's processes never include this one."""
    group = Cgroup.create(f"outspool-test-{os.getpid()}-tj-{slow}", Limits(processes=64))
    if group is None or not (joins := group.thread_joins(Limits(processes=64))):
        pytest.skip("no cgroup v1 pids hierarchy this thread may move in")
    mine = Path("/proc/thread-self/cgroup").read_text()
    try:
        setup = ChildSetup(thread_joins=joins, die_with_parent=False)
        assert setup.helpers() == [], "a helper still starts before the program"
        child = spawn(
            ["sh", "-c", "cat /proc/self/cgroup & wait"],
            env={"PATH": os.defpath},
            setup=setup,
            extra_setup=(lambda: None) if slow else None,
        )
        joined = [line for line in output(child).splitlines() if b"outspool-test-" in line]
        assert len(joined) == 1
        assert Path("/proc/thread-self/cgroup").read_text() == mine
        assert os.getpid() not in group.pids()
    finally:
        group.kill_all()
        group.remove()


def test_a_thread_join_is_not_used_for_memory_or_fewer_than_two_processes() -> None:
    group = Cgroup.create(f"outspool-test-{os.getpid()}-tj2", Limits(processes=64))
    if group is None or not group.thread_joins(Limits()):
        pytest.skip("no cgroup v1 pids hierarchy this thread may move in")
    limited = Cgroup.create(f"outspool-test-{os.getpid()}-tj3", Limits(memory=64 << 20))
    try:
        assert group.thread_joins(Limits(processes=1)) == ()
        assert limited is not None and limited.thread_joins(Limits(memory=64 << 20)) == ()
    finally:
        for made in (group, limited):
            if made is not None:
                made.remove()


def test_a_memory_cgroup_is_made_only_for_a_memory_limit() -> None:
    plain = Cgroup.create(f"outspool-test-{os.getpid()}-plain", Limits(processes=64))
    if plain is None:
        pytest.skip("this machine or user cannot make a cgroup")
    both = Limits(processes=64, memory=64 << 20)
    limited = Cgroup.create(f"outspool-test-{os.getpid()}-mem", both)
    try:
        assert limited is not None
        if len(limited.directories) == 1:
            pytest.skip("cgroup v2: one directory holds both controllers")
        assert [k.reason for k in plain.knobs] == [PROCESSES]
        assert len(plain.directories) == 1
        assert [k.reason for k in limited.knobs] == [MEMORY, PROCESSES]
    finally:
        for group in (plain, limited):
            if group is not None:
                group.remove()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to become another user)")
@pytest.mark.parametrize("slow", [False, True], ids=["helpers", "python"])
def test_both_ways_change_the_user_and_drop_other_groups(slow: bool) -> None:
    child = spawn(
        ["id"],
        env={"PATH": os.defpath},
        setup=ChildSetup(user=(65534, 65534)),
        extra_setup=(lambda: None) if slow else None,
    )
    assert output(child).split()[:3] == [
        b"uid=65534(nobody)",
        b"gid=65534(nogroup)",
        b"groups=65534(nogroup)",
    ]


@pytest.mark.parametrize("slow", [False, True], ids=["helpers", "python"])
def test_both_ways_refuse_a_missing_or_unrunnable_program(tmp_path: Path, slow: bool) -> None:
    extra = (lambda: None) if slow else None
    env = {"PATH": f"{tmp_path}:{os.defpath}"}
    with pytest.raises(SpawnError, match="command not found: no-such-program"):
        spawn(["no-such-program"], env=env, setup=ChildSetup(), extra_setup=extra)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(SpawnError, match="permission denied"):
        spawn([str(script)], env=env, setup=ChildSetup(), extra_setup=extra)
    script.chmod(0o755)
    assert output(spawn(["./not-executable"], env=env, cwd=str(tmp_path))) == b"hi\n"


def test_a_program_dies_with_its_capturing_process(tmp_path: Path, spawn_cli: SpawnCli) -> None:
    """``outspool run`` killed with SIGKILL: the kernel kills its program (parent-death
    signal, set by ``setpriv`` on the fast way)."""
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300"
    run = spawn_cli("run", "--db", str(tmp_path / "o.db"), "--", "sh", "-c", script)
    pid = int(wait_until(lambda: pidfile.read_text() if pidfile.exists() else None, message="pid"))
    assert alive(pid)
    run.send_signal(signal.SIGKILL)
    run.wait(30)
    wait_until(lambda: not alive(pid), message=f"program {pid} killed with its parent")


def test_a_signal_this_process_ignores_is_at_its_default_in_the_program() -> None:
    """An ignored signal stays ignored across exec, so such a start takes the Python way,
    which resets it."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        child = spawn(["grep", "SigIgn", "/proc/self/status"], env={"PATH": os.defpath})
    finally:
        signal.signal(signal.SIGHUP, before)
    ignored = int(output(child).split()[1], 16)
    assert ignored & (1 << (signal.SIGHUP - 1)) == 0
