"""The writer's CPU per line with many live executions, without programs or a capture loop.

``python -m bench.scale.writer_cpu [--backend sqlite|postgres] LIVE PER_COMMIT COMMITS``
opens LIVE executions on one :class:`~outspool.writer.Writer` (its thread not started),
then COMMITS times hands one ticker line to each of PER_COMMIT of them (round robin, as
a thousand programs printing every 100 ms look to a writer committing every few ms) and
runs one writer step: encode and commit. It prints the thread's CPU per line split into
the step's parts. The same store, lines and order on every version, so two versions run
one after the other (A B A B) compare the writer alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.scale.common import pg_schema


@contextlib.contextmanager
def _store_url(backend: str) -> Iterator[str]:
    if backend == "postgres":
        with pg_schema("writer") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as work:
        yield str(Path(work) / "writer.db")


def one(backend: str, live: int, per_commit: int, commits: int) -> dict[str, float | int | str]:
    from outspool import Outspool, Settings
    from outspool.jobs import Job
    from outspool.models import Outcome, Status, Stream

    settings = Settings.load(sandbox="none")
    with _store_url(backend) as url, Outspool(url, settings) as spool:
        store = spool.store
        from outspool import queue
        from outspool.writer import Writer

        ids = [
            queue.create(
                store, settings, Job(command=("true",)), Status.RUNNING, spool.worker_id
            ).id
            for _ in range(live)
        ]
        writer = Writer(store, settings)  # stepped here, its thread not started
        sinks = [writer.open(i) for i in ids]
        for sink in sinks:
            sink.started(None, time.time(), spool.worker_id)
        writer._step()
        began = time.process_time()
        turn = 0
        for n in range(commits):
            for _ in range(per_commit):
                sink = sinks[turn % live]
                turn += 1
                sink.write(Stream.STDOUT, f"{n} {time.time():.6f} tick\n".encode())
            writer._step()
        cpu = time.process_time() - began
        for sink in sinks:
            writer.request_finish(sink, Outcome(Status.SUCCEEDED, 0, None, None))
        writer._step()
        lines = commits * per_commit
        stored = sum(len(spool.read(i)) > 0 for i in ids[: min(live, lines)])
    return {
        "backend": backend,
        "live": live,
        "per_commit": per_commit,
        "lines": lines,
        "us_per_line": round(cpu / lines * 1e6, 1),
        "chunks": writer.stats.chunks,
        "executions_with_output": stored,
        "load": round(os.getloadavg()[0], 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.writer_cpu")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("live", type=int)
    parser.add_argument("per_commit", type=int)
    parser.add_argument("commits", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(one(args.backend, args.live, args.per_commit, args.commits)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
