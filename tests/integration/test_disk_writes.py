"""No quadratic rewrites: bytes written to disk per byte of output stay bounded.

The sketch's ``SET stdout = stdout || ?`` rewrites the whole row at every flush:
for 50 MiB that is hundreds of times the output. Chunks are appended, so the
database and its WAL together are written about twice (WAL, then checkpoint).
Measured here as ``wchar`` of this process (every byte it hands to write(2),
whatever the filesystem) and as the size of the files left behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from outspool import Outspool, Settings, Status, Stream
from tests.helpers import proc_io

SIZE = 50 << 20
MAX_WRITTEN_PER_BYTE = 6.0  # about 3 today; a rewrite per flush would be far above 100
# Random bytes are stored once (segment files) plus row overhead; a second copy would be 2.
MAX_STORED_PER_BYTE = 1.5

# Incompressible output, so compression cannot hide a rewrite; written in 64 KiB pieces
# so the capture sees many reads and the writer many commits.
CHILD = f"""
import os, random
random.seed(7)
fd = int(os.sys.argv[1])
left = {SIZE}
while left:
    piece = random.randbytes(min(left, 1 << 16))
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view):]
    left -= len(piece)
"""


@pytest.mark.slow
@pytest.mark.parametrize("stream", [Stream.STDOUT, Stream.STDERR], ids=["stdout", "stderr"])
def test_disk_bytes_per_output_byte_are_bounded(stream: Stream, db_path: Path) -> None:
    # A small pending bound forces hundreds of commits, where a rewrite per flush would hurt.
    settings = Settings.load(max_pending_bytes=64 << 10, read_size=64 << 10)
    with Outspool(str(db_path), settings) as spool:
        spool.run(["true"])  # schema, writer thread and heartbeat in place before measuring
        before = proc_io()["wchar"]
        ex = spool.run([sys.executable, "-c", CHILD, str(int(stream))])
        written = proc_io()["wchar"] - before
        stats = spool.writer.stats
    assert ex.status is Status.SUCCEEDED
    assert (ex.stdout_size if stream is Stream.STDOUT else ex.stderr_size) == SIZE
    assert ex.output_truncated is True  # lives in chunks, not in the row
    # a rewrite of the whole stream per commit would write commits / 2 times the output
    assert stats.commits >= 2 * 100
    assert written / SIZE <= MAX_WRITTEN_PER_BYTE, f"{written / SIZE:.1f} bytes written per byte"
    on_disk = stored_bytes(db_path)
    assert SIZE <= on_disk <= MAX_STORED_PER_BYTE * SIZE, f"{on_disk / SIZE:.2f} stored per byte"


def stored_bytes(db: Path) -> int:
    """Bytes in every file of the store: the database, its WAL, and the segment files
    inside ``<db>-chunks/`` (counted file by file, not as the folder's own size)."""
    found = [db.parent / name for name in os.listdir(db.parent) if name.startswith(db.name)]
    files = [f for p in found for f in ([*p.rglob("*")] if p.is_dir() else [p]) if f.is_file()]
    return sum(f.stat().st_size for f in files)
