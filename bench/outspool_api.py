"""How the harness talks to outspool: its command line (the stable contract), nothing else.

``outspool run --db PATH --quiet -- PROGRAM...`` captures; it prints ``outspool: execution
<ID>`` on stderr. ``outspool logs ID --db PATH --raw --stream S`` reads back the exact bytes;
``--follow`` follows; ``--tail N`` gives the last lines.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

OUTSPOOL = str(Path(sys.executable).parent / "outspool")

# The harness measures whole captures: no output limit (by default a stream keeps only its
# first and last 32 MiB, so a 1 GiB bulk capture would store 64 MiB and drop the rest).
os.environ.setdefault("OUTSPOOL_MAX_OUTPUT", "0")
ID_LINE = re.compile(r"outspool: execution (\S+)")


def available() -> str | None:
    """None when the CLI works, else why not."""
    try:
        done = subprocess.run(
            [OUTSPOOL, "run", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        return f"outspool CLI not runnable: {exc}"
    if done.returncode != 0:
        return f"`outspool run --help` failed: {(done.stderr or done.stdout).strip()[-200:]}"
    if "--quiet" not in done.stdout:
        return "`outspool run` has no --quiet option yet"
    return None


def run_argv(db: Path | str, command: list[str]) -> list[str]:
    return [OUTSPOOL, "run", "--db", str(db), "--quiet", "--", *command]


def parse_id(stderr_text: str) -> str | None:
    match = ID_LINE.search(stderr_text)
    return match.group(1) if match else None


def logs_argv(db: Path | str, execution_id: str, *args: str) -> list[str]:
    return [OUTSPOOL, "logs", execution_id, "--db", str(db), *args]


def stream_digest(db: Path | str, execution_id: str, stream: str) -> str | None:
    """sha256 of ``outspool logs --raw --stream STREAM``, streamed; None if it failed."""
    proc = subprocess.Popen(
        logs_argv(db, execution_id, "--raw", "--stream", stream), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    h = hashlib.sha256()
    while block := proc.stdout.read(1 << 20):
        h.update(block)
    return h.hexdigest() if proc.wait() == 0 else None


#: The start of a mixed producer's line (``bench.produce.mixed_line``): stream tag, number.
NUMBERED = re.compile(rb"([OE]) (\d{8}) [a-z]")


def mixed_order(db: Path, execution_id: str) -> str:
    """Check ``--stream all`` for the mixed producer's numbered lines.

    Each stream must be complete and in order; across the two pipes, the order in which the
    capturer saw them is the best any capturer can do, so inversions are counted, not failed.
    A read can end inside a line (under load a pipe holds more than one read takes); the
    merged stream then has the rest of that line after the other stream's bytes: counted
    too (each stream's bytes are checked whole by the scenario's sha256).
    """
    done = subprocess.run(
        logs_argv(db, execution_id, "--raw", "--stream", "all"), capture_output=True, check=False
    )
    if done.returncode != 0:
        return "could not read --stream all"
    last = {b"O": -1, b"E": -1}
    inversions = previous = pieces = 0
    lines = done.stdout.splitlines()
    for line in lines:
        numbered = NUMBERED.match(line)
        if numbered is None:  # the rest of a line a read cut, after the other stream's bytes
            pieces += 1
            continue
        tag, number = numbered[1], int(numbered[2])
        if number <= last[tag]:
            return "per-stream order BROKEN"
        last[tag] = number
        inversions += number < previous
        previous = number
    cut = f"; {pieces:,} line ends after the other stream's bytes" if pieces else ""
    return f"per-stream held; {inversions:,} cross-stream inversions in {len(lines):,} lines{cut}"


def library_missing() -> str | None:
    """None when the library offers what the harness uses (Outspool.start / .tail)."""
    try:
        from outspool import Outspool
    except ImportError as exc:
        return f"outspool library not importable: {exc}"
    for name in ("open", "start", "tail", "close"):
        if not hasattr(Outspool, name):
            return f"outspool.Outspool has no {name}()"
    return None


def tail_reader(db: str, n: int) -> Callable[[str], list[str]]:
    """The last ``n`` lines of an execution, through the library (``Outspool.tail``)."""
    from outspool import Outspool

    spool = Outspool(db).open()

    def tail(execution_id: str) -> list[str]:
        return spool.tail(execution_id, n).data.decode("utf-8", "replace").splitlines()

    return tail


def library_digests(db: Path, ids: list[str], stream: str) -> list[str]:
    """sha256 of each execution's stored stream, read in this process through the library."""
    from outspool import Outspool, Stream

    with Outspool(str(db)) as spool:
        return [
            hashlib.sha256(b"".join(spool.iter_output(i, Stream[stream.upper()]))).hexdigest()
            for i in ids
        ]


def capture_many(db: str, n: int, command: list[str]) -> int:
    """Fan-in through the library: N programs captured by this one process.

    Prints the execution IDs on stdout, one a line, once all have ended.
    """
    from outspool import Outspool

    with Outspool(db) as spool:
        handles = [spool.start(command) for _ in range(n)]
        finished = [handle.wait() for handle in handles]
    print("\n".join(e.id for e in finished), flush=True)
    return max(e.exit_code or 0 for e in finished)
