"""Where a watched line's time goes: timestamps along its path, for the watchers scenario.

``python -m bench.scale.trace serve|worker TRACE_FILE OUTSPOOL_ARGS...`` runs ``outspool``
with a few of its methods wrapped to note the wall-clock time (``time.time()``, the clock the
ticker writes into its lines, so all processes share one clock domain) at each step, and
writes them as JSON to TRACE_FILE when the process exits. The package is not changed: the
wrapping lives here, so the stamps cost nothing outside this harness.

* worker: when a group commit returned, for every chunk in it (``Writer._write``);
* serve: when the store poked a waiter (``Waiter.subscribe``'s callback, on the store's
  thread), when a waiter took a chunk into its window after reading it (``Waiter._keep``,
  with the tick lines in it and the chunk's capture time, the read of its first byte), and
  when uvicorn handed an event's bytes to the socket (``RequestResponseCycle.send``), or
  the fan-out did (``Wire.write``).

``analyse(...)`` joins these with the clients' arrival times (``sse_clients`` with
``BENCH_TRACE=1``) into per-stage latencies of the main execution's lines.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TICK = re.compile(rb"(\d+) (\d+\.\d+) tick")

Record = list[Any]


def _dump(path: str, what: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(what))


def install_worker(path: str) -> None:
    from outspool.writer import Writer

    commits: list[Record] = []
    original = Writer._write

    def _write(self: Writer, batch: Any) -> None:
        began = time.time()
        original(self, batch)
        now = time.time()
        for chunk in batch.chunks:
            commits.append([chunk.execution_id, chunk.chunk_index, began, now])

    Writer._write = _write  # type: ignore[method-assign]
    atexit.register(_dump, path, {"commits": commits})


class ServerTrace:
    """What the wrapped server methods note (see the module)."""

    def __init__(self) -> None:
        self.pokes: list[Record] = []  # [execution, time]
        self.kept: list[Record] = []  # [execution, chunk index, SEQs, capture time, time]
        self.sends: list[tuple[float, int, bytes]] = []  # (time, connection, body)
        self.paths: dict[int, str] = {}  # connection -> its request path
        self.reads: list[Record] = []  # [waiting, called, began in its thread, returned, back]

    def dump(self, path: str) -> None:
        parsed: dict[int, list[int]] = {}
        out = []
        for at, conn, body in self.sends:
            seqs = parsed.get(id(body))
            if seqs is None:
                seqs = parsed[id(body)] = [int(m.group(1)) for m in TICK.finditer(body)]
            if seqs:
                out.append([at, self.paths[conn].split("/")[3], conn, seqs])
        what = {"pokes": self.pokes, "kept": self.kept, "sends": out, "reads": self.reads}
        _dump(path, what)


def install_server(path: str) -> None:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    from outspool.web import streams

    trace = ServerTrace()
    _wrap_waiter(streams, trace)
    send = RequestResponseCycle.send

    async def _send(self: RequestResponseCycle, message: Any) -> None:
        await send(self, message)
        body = message.get("body") if message["type"] == "http.response.body" else None
        if body:
            trace.sends.append((time.time(), id(self), body))
            if id(self) not in trace.paths:
                trace.paths[id(self)] = self.scope["path"]

    serve = uvicorn.Server._serve

    async def _serve(self: uvicorn.Server, *args: Any, **kwargs: Any) -> None:
        try:
            await serve(self, *args, **kwargs)
        finally:  # before uvicorn re-raises SIGTERM, which ends the process without atexit
            trace.dump(path)

    RequestResponseCycle.send = _send  # type: ignore[method-assign]
    _wrap_wire(trace)
    uvicorn.Server._serve = _serve  # type: ignore[method-assign]


def _wrap_wire(trace: ServerTrace) -> None:
    """The fan-out's direct writes (``Wire.write``), noted as the cycle's sends are."""
    try:
        from outspool.web.wire import Wire
    except ImportError:  # a version without the direct fan-out
        return
    write = Wire.write

    def _write(self: Any, data: bytes, framed: bytes) -> None:
        write(self, data, framed)
        cycle = self._cycle
        trace.sends.append((time.time(), id(cycle), data))
        if id(cycle) not in trace.paths:
            trace.paths[id(cycle)] = cycle.scope["path"]

    Wire.write = _write  # type: ignore[method-assign]


def _wrap_waiter(streams: Any, trace: ServerTrace) -> None:
    import asyncio

    def subscribe(self: Any) -> None:
        loop = asyncio.get_running_loop()
        key = self.execution_id

        def poke() -> None:
            trace.pokes.append([key, time.time()])
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.poked.set)

        self.unsubscribe = self.hub.spool.store.subscribe(self.execution_id, poke)

    in_thread = streams.Hub.in_thread

    async def _in_thread(self: Any, func: Any, *args: object, waiting: bool = False) -> Any:
        called = time.time()
        times: list[float] = []

        def timed(*a: object) -> Any:
            times.append(time.time())
            try:
                return func(*a)
            finally:
                times.append(time.time())

        try:
            return await in_thread(self, timed, *args, waiting=waiting)
        finally:
            trace.reads.append([waiting, called, *times, time.time()])

    keep = streams.Waiter._keep

    def _keep(self: Any, chunk: Any) -> None:
        keep(self, chunk)
        seqs = [int(m.group(1)) for m in TICK.finditer(chunk.stdout)]
        trace.kept.append(
            [self.execution_id, chunk.chunk_index, seqs, chunk.timestamp, time.time()]
        )

    streams.Waiter.subscribe = subscribe
    streams.Waiter._keep = _keep
    streams.Hub.in_thread = _in_thread


def main(argv: list[str]) -> int:
    what, path, args = argv[0], argv[1], argv[2:]
    if what == "worker":
        install_worker(path)
    else:
        install_server(path)
    from outspool.cli import main as cli

    sys.argv = ["outspool", *args]
    try:
        cli()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    return {
        "p50": round(ordered[n // 2] * 1000, 1),
        "p90": round(ordered[min(n - 1, int(n * 0.9))] * 1000, 1),
        "p99": round(ordered[min(n - 1, int(n * 0.99))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
        "n": n,
    }


def analyse(
    worker: dict[str, Any], server: dict[str, Any], arrivals: list[Record], main_id: str, skip: int
) -> dict[str, Any]:
    """Per-stage latencies (ms from each line's send time) of ``main_id``'s lines after
    ``skip``, plus the same over the other executions' lines."""
    result: dict[str, Any] = {
        "commit_duration": _pct([now - began for _e, _i, began, now in worker["commits"]])
    }
    for waiting in (True, False):
        done = [r for r in server["reads"] if r[0] is waiting and len(r) == 5]
        result["waiter_reads" if waiting else "own_reads"] = {
            "count": len(done),
            "queued": _pct([r[2] - r[1] for r in done]),
            "ran": _pct([r[3] - r[2] for r in done]),
            "back": _pct([r[4] - r[3] for r in done]),
        }
    carried = [len(seqs) for _at, _e, _conn, seqs in server["sends"]]
    result["writes"] = {  # socket writes that carried lines, and how many lines each
        "count": len(carried),
        "lines": sum(carried),
        "with_more_than_one_line": sum(1 for n in carried if n > 1),
    }
    line = _server_stages(worker, server)
    sent: dict[tuple[str, int], list[float]] = defaultdict(list)
    for at, e, _conn, seqs in server["sends"]:
        for seq in seqs:
            sent[e, seq].append(at)
    arrived: dict[tuple[str, int], list[float]] = defaultdict(list)
    send_time: dict[tuple[str, int], float] = {}
    for e, seq, sent_at, at in arrivals:
        arrived[e, seq].append(at)
        send_time[e, seq] = sent_at
    for name in ("main", "others"):
        stages: dict[str, list[float]] = defaultdict(list)
        for key, t0 in send_time.items():
            if (key[0] == main_id) == (name == "main") and key[1] > skip:
                _line_stages(stages, t0, line.get(key, {}), sorted(sent[key]), arrived[key])
        order = ("read", "commit", "poke", "kept", "first_write", "write", "last_write", "client")
        result[name] = {s: _pct(stages[s]) for s in (*order, "client_minus_write_by_rank")}
    return result


def _server_stages(
    worker: dict[str, Any], server: dict[str, Any]
) -> dict[tuple[str, int], dict[str, float]]:
    """(execution, SEQ) -> when its line was read, committed, poked and kept."""
    commit = {(e, i): (began, now) for e, i, began, now in worker["commits"]}
    pokes: dict[str, list[float]] = defaultdict(list)
    for e, at in server["pokes"]:
        pokes[e].append(at)
    line: dict[tuple[str, int], dict[str, float]] = {}
    for e, index, seqs, captured, kept in server["kept"]:
        stamps = {"read": captured, "kept": kept}
        if (e, index) in commit:
            began, stamps["commit"] = commit[e, index]
            # the first poke once the commit began (a NOTIFY may beat the commit's return)
            after = [p for p in pokes[e] if p >= began]
            if after:
                stamps["poke"] = min(after)
        for seq in seqs:
            line[e, seq] = stamps
    return line


def _line_stages(
    stages: dict[str, list[float]],
    t0: float,
    line: dict[str, float],
    writes: list[float],
    arrived: list[float],
) -> None:
    for stage, at in line.items():
        stages[stage].append(at - t0)
    if writes:
        stages["first_write"].append(writes[0] - t0)
        stages["last_write"].append(writes[-1] - t0)
        stages["write"] += [w - t0 for w in writes]
    stages["client"] += [a - t0 for a in arrived]
    # per connection: a client's arrival minus the server's write, matched by rank
    for w, a in zip(writes, sorted(arrived), strict=False):
        stages["client_minus_write_by_rank"].append(a - w)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
