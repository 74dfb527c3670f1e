"""Many SSE clients in one process (asyncio, raw HTTP/1.0: the body is the event stream).

``python -m bench.scale.sse_clients HOST PORT SKIP DEADLINE ID:COUNT...`` opens COUNT
streams on ``/api/executions/ID/events`` for each ID, prints ``connected N`` once all are
open, reads until each execution's final ``status`` event (or DEADLINE seconds), then
prints one JSON object: ``latencies`` (send time of each ``SEQ TIME tick`` line after the
first SKIP -> arrival here), ``lines``, ``finished`` and ``errors``; with ``BENCH_TRACE=1``
also ``arrivals``: ``[execution id, SEQ, send time, arrival]`` of every line (for
``bench.scale.trace``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.scale.common import latencies

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "lost"}
TRACE = os.environ.get("BENCH_TRACE") == "1"


class Tally:
    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.latencies: list[float] = []
        self.lines = 0
        self.finished = 0
        self.errors: list[str] = []
        self.arrivals: list[tuple[str, int, float, float]] = []


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter, str]


async def _open(host: str, port: int, execution_id: str) -> Stream:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/executions/{execution_id}/events HTTP/1.0\r\nHost: {host}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"{execution_id}: {status!r}")
    while (await reader.readline()).strip():
        pass  # headers
    return reader, writer, execution_id  # the writer is kept: dropping it closes the connection


async def _read(stream: Stream, tally: Tally) -> None:
    reader, writer, execution_id = stream
    try:
        await _events(reader, tally, execution_id)
    finally:
        writer.close()


async def _events(reader: asyncio.StreamReader, tally: Tally, execution_id: str) -> None:
    event = b""
    async for raw in reader:
        line = raw.rstrip(b"\n")
        if line.startswith(b"event: "):
            event = line[7:]
        elif line.startswith(b"data: ") and event == b"output":
            body = json.loads(line[6:])
            mine: list[float] = []
            now = time.time()
            latencies(body["text"].encode(), now, mine, tally.skip)
            if TRACE:
                for tick in body["text"].splitlines():
                    seq, sent, _ = tick.split()
                    tally.arrivals.append((execution_id, int(seq), float(sent), now))
            tally.latencies.extend(mine)
            tally.lines += body["text"].count("\n")
        elif event == b"status" and line.startswith(b"data: ") and _final(line[6:]):
            tally.finished += 1
            return


def _final(data: bytes) -> bool:
    return json.loads(data).get("status") in FINAL


async def main_async(host: str, port: int, skip: int, deadline: float, targets: list[str]) -> Tally:
    tally = Tally(skip)
    ids = [t.split(":")[0] for t in targets for _ in range(int(t.split(":")[1]))]
    readers: list[Stream] = []
    for start in range(0, len(ids), 50):  # stay within the listen backlog
        opened = await asyncio.gather(
            *(_open(host, port, i) for i in ids[start : start + 50]), return_exceptions=True
        )
        for got in opened:
            if isinstance(got, BaseException):
                tally.errors.append(repr(got))
            else:
                readers.append(got)
    print(f"connected {len(readers)}", flush=True)
    tasks = [asyncio.create_task(_read(r, tally)) for r in readers]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    tally.errors += [repr(t.exception()) for t in done if t.exception() is not None]
    if pending:
        tally.errors.append(f"{len(pending)} streams still open at the deadline")
    return tally


def main(argv: list[str]) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port, skip, deadline = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    tally = asyncio.run(main_async(host, port, skip, deadline, argv[4:]))
    json.dump(
        {
            "latencies": tally.latencies,
            "lines": tally.lines,
            "finished": tally.finished,
            "errors": tally.errors[:20],
            "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
            **({"arrivals": tally.arrivals} if TRACE else {}),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
