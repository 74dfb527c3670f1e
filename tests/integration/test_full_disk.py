"""A full disk: the store refuses writes, the program waits, nothing is lost once there is room.

Runs on a small tmpfs mounted for the test (root only; skipped with a reason elsewhere).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from outspool import Outspool, Settings, Status, Stream
from tests.helpers import wait_until

SIZE = 2 << 20
CHILD = f"import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes({SIZE}))"


def test_a_full_disk_holds_output_until_there_is_room(small_disk: Path) -> None:
    filler = small_disk / "filler"
    settings = Settings.load(max_pending_bytes=256 << 10, compression="none", busy_timeout=1.0)
    with Outspool(str(small_disk / "out.db"), settings) as spool:
        filler.write_bytes(b"\0" * ((3 << 20) - (512 << 10)))  # leave about 0.5 MiB
        handle = spool.start([sys.executable, "-c", CHILD])
        try:
            wait_until(lambda: spool.writer.stats.retries > 0, message="the store to refuse")
            assert handle.join(0) is False  # the program waits on its pipe
            filler.unlink()  # room again
            ex = handle.wait(120)
        finally:
            if not handle.join(0):
                handle.cancel(force=True)
        assert ex.status is Status.SUCCEEDED
        assert spool.read(ex.id, Stream.STDOUT) == random.Random(7).randbytes(SIZE)
