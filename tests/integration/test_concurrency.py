"""Many captures in one process; several capturing processes and a reader on one file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from outspool import Outspool, Running, Settings, Status, Stream
from tests.conftest import SpawnCli
from tests.helpers import cli_env

# Writes a deterministic mix of both streams, chosen by argv[1], with binary bytes.
WRITER = r"""
import os, random, sys
seed, size = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
left = size
while left:
    n = min(left, rng.randint(1, 9000))
    data = bytes([seed % 256]) + rng.randbytes(n - 1) if n > 1 else b"\n"
    fd = rng.choice((1, 2))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    left -= n
"""


def expected(seed: int, size: int) -> tuple[bytes, bytes]:
    """What WRITER prints for ``seed`` (the same generator, replayed here)."""
    import random

    rng = random.Random(seed)
    out, err = bytearray(), bytearray()
    left = size
    while left:
        n = min(left, rng.randint(1, 9000))
        data = bytes([seed % 256]) + rng.randbytes(n - 1) if n > 1 else b"\n"
        (out if rng.choice((1, 2)) == 1 else err).extend(data)
        left -= n
    return bytes(out), bytes(err)


def test_32_concurrent_captures_in_one_process(spool: Outspool, handles: list[Running]) -> None:
    size = 200_000
    for seed in range(40):
        handles.append(spool.start([sys.executable, "-c", WRITER, str(seed), str(size)]))
    finals = [h.wait(120) for h in handles]
    assert len({ex.id for ex in finals}) == 40
    for seed, ex in enumerate(finals):
        out, err = expected(seed, size)
        assert ex.status is Status.SUCCEEDED, ex.reason
        assert (ex.stdout_size, ex.stderr_size) == (len(out), len(err))
        assert spool.read(ex.id, Stream.STDOUT) == out, f"stdout of writer {seed}"
        assert spool.read(ex.id, Stream.STDERR) == err, f"stderr of writer {seed}"


# Reads everything in a loop until the go-away file exists; any error ends it non-zero.
READER = r"""
import sys
from pathlib import Path
from outspool import Outspool, Settings
db, stop = sys.argv[1], Path(sys.argv[2])
rounds = 0
with Outspool(db, Settings.load()) as spool:
    while not stop.exists() or rounds < 3:
        for ex in spool.list(limit=100):
            spool.read(ex.id)
            spool.tail(ex.id, 5)
            spool.get(ex.id)
        rounds += 1
print(rounds)
"""


def test_several_processes_write_one_file_while_another_reads(
    tmp_path: Path, spawn_cli: SpawnCli
) -> None:
    db = str(tmp_path / "shared.db")
    stop = tmp_path / "stop"
    Outspool(db, Settings.load()).open().close()  # the schema exists before anyone reads
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, db, str(stop)],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    size = 1_500_000
    try:
        runs = [
            spawn_cli(
                "run", "-q", "--db", db, "--", sys.executable, "-c", WRITER, str(s), str(size)
            )
            for s in range(6)
        ]
        results = [(p.wait(120), p.stdout, p.stderr) for p in runs]
        stop.touch()
        reader_out, reader_err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, reader_err.decode()
    assert reader_err == b""
    assert int(reader_out) >= 3
    ids = []
    for rc, _, err_pipe in results:
        assert rc == 0
        assert err_pipe is not None
        lines = err_pipe.read().decode().splitlines()
        assert len(lines) == 1, lines  # only the execution line: no lock error, no retry
        assert lines[0].startswith("outspool: execution ")
        ids.append(lines[0].split()[-1])
    with Outspool(db, Settings.load()) as spool:
        for seed, ex_id in enumerate(ids):
            out, err = expected(seed, size)
            assert spool.read(ex_id, Stream.STDOUT) == out
            assert spool.read(ex_id, Stream.STDERR) == err
            assert spool.get(ex_id).status is Status.SUCCEEDED
