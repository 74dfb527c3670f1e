"""Fan-in: N programs captured concurrently by ONE process.

``python bench/fanin.py KIND N -- PROGRAM ARG...`` with KIND:
  pyloop DIR   the minimal loop, one selector over all pipes, files DIR/<k>.out / .err
  sketch DB    the sketch's OutputBuffer per program, all on one connection (asyncio)
  outspool DB  outspool's library, if it offers one (see ``outspool_api.capture_many``)
"""

from __future__ import annotations

import asyncio
import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sketch


def run_pyloop(out_dir: Path, n: int, command: list[str]) -> int:
    sel = selectors.DefaultSelector()
    sinks: dict[int, IO[bytes]] = {}
    procs = []
    for k in range(n):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        procs.append(proc)
        for pipe, suffix in ((proc.stdout, "out"), (proc.stderr, "err")):
            sinks[pipe.fileno()] = open(out_dir / f"{k + 1}.{suffix}", "wb", buffering=0)  # noqa: SIM115
            sel.register(pipe.fileno(), selectors.EVENT_READ)
    while sinks:
        for key, _ in sel.select():
            fd = int(key.fd)
            data = os.read(fd, 65536)
            if data:
                sinks[fd].write(data)
            else:
                sel.unregister(fd)
                sinks.pop(fd).close()
    return max(proc.wait() for proc in procs)


async def run_sketch(db_path: str, n: int, command: list[str]) -> int:
    db = sketch.Database(db_path, literal_async=False)
    codes = await asyncio.gather(
        *(sketch.process_job(db, str(k + 1), command, False) for k in range(n))
    )
    return max(codes)


def main(argv: list[str]) -> int:
    kind, target, n = argv[0], argv[1], int(argv[2])
    command = argv[argv.index("--") + 1 :]
    if kind == "pyloop":
        return run_pyloop(Path(target), n, command)
    if kind == "sketch":
        return asyncio.run(run_sketch(target, n, command))
    from bench import outspool_api

    return outspool_api.capture_many(target, n, command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
