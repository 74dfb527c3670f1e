"""SIGKILL at random points: a capturing process (``outspool run``, or a worker mid-job) dies
without a word while its program floods both streams.

Afterwards, on both backends: what is stored is a byte-exact prefix of what the program
wrote, stream by stream; every chunk still passes its checksum; ``recover`` marks the
execution ``lost`` with the reason; no process of the execution is left (the program, the
grandchild it started, anything carrying its execution ID); the store still opens, lists
and reads. The points are drawn from fixed seeds (so a failure replays), and each is an
amount of output the store must hold before the kill: the writer is then in the middle of
its next commits, the program in the middle of its writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from outspool import Outspool, Status
from outspool.isolation import EXECUTION_ENV
from outspool.limits import left_behind
from outspool.models import Stream
from tests.conftest import RunCli, SpawnCli
from tests.helpers import alive, wait_until

#: The program: starts a grandchild that would outlive it, writes its pid, then writes
#: the endless sequence of :func:`expected` in writes of 1 to 40 lines drawn from its seed,
#: one line in seven to stderr, until its pipes break.
FLOOD = r"""
import hashlib, os, random, subprocess, sys
seed, pids = int(sys.argv[1]), sys.argv[2]
child = subprocess.Popen(["sleep", "300"])
with open(pids + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.rename(pids + ".tmp", pids)
rng = random.Random(seed)
i = 0
while True:
    out, err = [], []
    for _ in range(rng.randint(1, 40)):
        line = b"%08d %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode())
        (err if i % 7 == 3 else out).append(line)
        i += 1
    for fd, data in ((1, b"".join(out)), (2, b"".join(err))):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
"""

#: Kills of ``outspool run`` per backend, and of a worker: (seed, which kind of point).
RUN_KILLS = [(1401, "at once"), (1402, "first bytes"), (1403, "early"), (1404, "late")]
WORKER_KILLS = [(1411, "early"), (1412, "late")]
#: Recovery may take the heartbeat of a process that is gone as late after this.
IMPATIENT = {"OUTSPOOL_HEARTBEAT_TIMEOUT": "0.5"}


def expected(size: int) -> tuple[bytes, bytes]:
    """The first lines of the program's stdout and stderr, at least ``size`` bytes each."""
    out, err = bytearray(), bytearray()
    i = 0
    while len(out) < size or len(err) < size:
        line = b"%08d %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode())
        (err if i % 7 == 3 else out).extend(line)
        i += 1
    return bytes(out), bytes(err)


def kill_point(seed: int, kind: str) -> int:
    """Bytes of stdout the store must hold before the kill."""
    rng = random.Random(seed)
    return {
        "at once": 0,
        "first bytes": 1,
        "early": rng.randrange(2, 1 << 16),
        "late": rng.randrange(1 << 16, 2 << 20),
    }[kind]


def env_for(seed: int) -> dict[str, str]:
    """Settings drawn from the seed too: compression on or off, chunks small or large."""
    rng = random.Random(seed * 31)
    return {
        "OUTSPOOL_HEARTBEAT_INTERVAL": "0.1",
        "OUTSPOOL_COMPRESSION": rng.choice(["zstd", "none"]),
        "OUTSPOOL_MAX_CHUNK_SIZE": str(rng.choice([4096, 65536, 1 << 20])),
    }


def stored_at_least(spool: Outspool, execution_id: str, size: int) -> bool:
    ex = spool.get(execution_id)
    assert not ex.status.finished, ex  # the program never ends by itself
    return ex.stdout_size >= size and ex.status is Status.RUNNING


def left_of(execution_id: str) -> list[int]:
    """Live processes carrying the execution's ID in their environment."""
    marker = f"{EXECUTION_ENV}={execution_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and alive(int(entry)):
            found.append(int(entry))
    return found


def kill_then_check(
    db_url: str,
    capturer: subprocess.Popen[bytes],
    execution_id: str,
    pids: Path,
    point: int,
    run_cli: RunCli,
) -> None:
    """SIGKILL ``capturer`` once the store holds ``point`` bytes of the program's stdout,
    then :func:`check_after_kill`."""
    with Outspool(db_url) as spool:
        wait_until(pids.exists, message="the program to start")
        wait_until(lambda: stored_at_least(spool, execution_id, point), message="the kill point")
        capturer.send_signal(signal.SIGKILL)
        assert capturer.wait(30) == -signal.SIGKILL
        check_after_kill(db_url, execution_id, pids, run_cli, spool)


def check_after_kill(
    db_url: str, execution_id: str, pids: Path, run_cli: RunCli, spool: Outspool
) -> None:
    """Everything the module docstring promises, for one killed capture."""
    program, grandchild = (int(p) for p in pids.read_text().split())
    wait_until(
        lambda: execution_id.encode() in run_cli("recover", "--db", db_url, env=IMPATIENT).stdout,
        message="recover to mark it lost",
    )
    ex = spool.get(execution_id)
    assert ex.status is Status.LOST, ex
    assert ex.reason is not None and "stopped heartbeating and is gone" in ex.reason, ex.reason
    wait_until(
        lambda: not alive(program) and not alive(grandchild) and not left_of(execution_id),
        message="no process of the execution to be left",
    )
    # nor its cgroup (a worker's are nested in the worker's, emptied by its watchdog)
    wait_until(
        lambda: (
            run_cli("recover", "--db", db_url, env=IMPATIENT).rc == 0
            and execution_id not in left_behind()
        ),
        message="recover to remove the execution's cgroup",
    )
    stdout = b"".join(spool.iter_output(execution_id, Stream.STDOUT))  # checksums verified
    stderr = b"".join(spool.iter_output(execution_id, Stream.STDERR))
    want_out, want_err = expected(max(len(stdout), len(stderr)))
    assert want_out.startswith(stdout), "stored stdout is not what the program wrote"
    assert want_err.startswith(stderr), "stored stderr is not what the program wrote"
    assert (len(stdout), len(stderr)) == (ex.stdout_size, ex.stderr_size)
    logs = run_cli("logs", "--db", db_url, execution_id)
    assert logs.rc == 0, logs.stderr
    assert len(logs.stdout) == len(stdout) + len(stderr)
    listing = run_cli("ls", "--db", db_url, "--json", "-n", "100")
    assert listing.rc == 0, listing.stderr
    rows = {row["id"]: row["status"] for row in json.loads(listing.stdout)}
    assert rows[execution_id] == "lost"


@pytest.mark.parametrize(("seed", "kind"), RUN_KILLS)
def test_sigkill_of_outspool_run_mid_output(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli, seed: int, kind: str
) -> None:
    pids = tmp_path / "pids"
    run = spawn_cli(
        "run", "--quiet", "--db", db_url, "--", sys.executable, "-c", FLOOD, str(seed), str(pids),
        env=env_for(seed),
    )  # fmt: skip
    assert run.stderr is not None
    execution_id = run.stderr.readline().decode().split()[-1]
    kill_then_check(db_url, run, execution_id, pids, kill_point(seed, kind), run_cli)


@pytest.mark.parametrize(("seed", "kind"), WORKER_KILLS)
def test_sigkill_of_a_worker_mid_job(
    db_url: str, tmp_path: Path, spawn_cli: SpawnCli, run_cli: RunCli, seed: int, kind: str
) -> None:
    pids = tmp_path / "pids"
    submitted = run_cli(
        "submit", "--db", db_url, "--", sys.executable, "-c", FLOOD, str(seed), str(pids)
    )
    assert submitted.rc == 0, submitted.stderr
    execution_id = submitted.stdout.decode().strip()
    worker = spawn_cli("worker", "--db", db_url, "--concurrency", "2", env=env_for(seed))
    kill_then_check(db_url, worker, execution_id, pids, kill_point(seed, kind), run_cli)
