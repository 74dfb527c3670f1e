"""outspool as a library: run a program, read its output, follow another one live.

Run it with: .venv/bin/python examples/library.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from outspool import Outspool, Stream

PROGRAM = [
    sys.executable,
    "-c",
    "import sys; print('to stdout'); print('to stderr', file=sys.stderr)",
]
SLOW = [
    sys.executable,
    "-c",
    "import time\nfor i in range(3): print(f'tick {i}', flush=True); time.sleep(0.2)",
]


def main(db: str) -> None:
    with Outspool(db) as spool:
        # Run to the end; every byte is stored.
        ex = spool.run(PROGRAM, name="hello")
        print(ex.status.value, ex.exit_code, ex.stdout_size, ex.stderr_size)
        print(spool.read(ex.id))  # both streams, in arrival order
        print(spool.read(ex.id, Stream.STDERR))
        print(spool.tail(ex.id, lines=1).data)  # the last line, from the newest chunk only

        # Start in the background and follow live (from here or from any other process).
        running = spool.start(SLOW)
        for stream, piece in spool.follow(running.id):
            print(stream.name, piece)
        print(running.wait().status.value)


async def amain(db: str) -> None:
    with Outspool(db) as spool:
        ex = await spool.arun(PROGRAM)
        print("async:", await spool.aread(ex.id))
        running = spool.start(SLOW)
        async for _, piece in spool.follow(running.id):
            print("async follow:", piece)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(str(Path(tmp) / "library.db"))
        asyncio.run(amain(str(Path(tmp) / "library.db")))
