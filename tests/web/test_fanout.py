"""The direct fan-out: caught-up followers of one execution written to once per event,
through the real server (uvicorn in a thread) over a real SQLite store."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from outspool import Outspool, Running, Settings
from outspool.settings import KiB
from outspool.web import fanout, streams, wire
from outspool.web.app import create_app
from outspool.web.streams import Hub
from tests.helpers import wait_until
from tests.web.conftest import running
from tests.web.programs import Gate
from tests.web.sse import Event, collect, events, output_of


class CountingBodies:
    """The app, counting the body messages each request sends through ASGI."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[int] = []

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.app.state.hub
        return hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        index = len(self.bodies)
        self.bodies.append(0)

        async def counting(message: Any) -> None:
            if message["type"] == "http.response.body":
                self.bodies[index] += 1
            await send(message)

        await self.app(scope, receive, counting)


def members(hub: Hub, execution_id: str) -> int:
    waiter = hub.waiters.get(execution_id)
    return 0 if waiter is None else len(waiter.fanout.members)


def raw_request(url: str, path: str, receive_buffer: int = 0) -> socket.socket:
    """An HTTP/1.0 request on a socket of its own: the body is the bare event stream.
    ``receive_buffer``: a small one, for a client that stops reading."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while piece := sock.recv(65536):
        out += piece
    return bytes(out)


def parsed(response: bytes) -> list[Event]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower()
    return list(events(httpx.Response(200, content=body)))


@pytest.fixture
def gated(spool: Outspool, handles: list[Running], tmp_path: Path) -> Iterator[Gate]:
    gate = Gate(tmp_path, 12)
    handles.append(spool.start(gate.command()))
    yield gate
    gate.open_all()


def test_caught_up_followers_are_written_to_by_the_fanout_not_through_asgi(
    spool: Outspool, handles: list[Running], gated: Gate
) -> None:
    """Six followers keep up with a program printing twelve steps: each step reaches
    them as one write each from the fan-out, so the body messages each stream sends
    through ASGI stay a handful (the first events and the end), not one per step. Each
    gets every byte once, in order, and the final status last."""
    handle = handles[-1]
    app = CountingBodies(create_app(spool))
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        results: list[list[Event]] = []
        path = f"/api/executions/{handle.id}/events"
        threads = [
            threading.Thread(target=lambda: results.append(collect(client, path))) for _ in range(6)
        ]
        for t in threads:
            t.start()
        for step in range(gated.steps):
            wait_until(lambda: members(app.hub, handle.id) == 6, message="6 members")
            gated.open(step)
            end = f"line {step + 1}" if step + 1 < gated.steps else "done"
            wait_until(lambda: end.encode() in spool.read(handle.id), message=end)  # noqa: B023
        for t in threads:
            t.join(60)
    stored = spool.read(handle.id)
    assert len(results) == 6
    for seen in results:
        assert output_of(seen) == stored
        assert (seen[-1].kind, seen[-1].data["status"]) == ("status", "succeeded")
    assert max(app.bodies) < gated.steps // 2  # through ASGI: one per step or more


def test_http_1_0_and_1_1_followers_share_the_fanout_each_framed_its_way(
    spool: Outspool, handles: list[Running], gated: Gate
) -> None:
    """One fan-out writes the same events to a chunked (HTTP/1.1) and a bare (HTTP/1.0)
    response: each client reads exactly the stored bytes and a clean end."""
    handle = handles[-1]
    app = create_app(spool)
    hub: Hub = app.app.state.hub
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        chunked: list[list[Event]] = []
        path = f"/api/executions/{handle.id}/events"
        thread = threading.Thread(target=lambda: chunked.append(collect(client, path)))
        thread.start()
        with raw_request(url, path) as sock:
            wait_until(lambda: members(hub, handle.id) == 2, message="2 members")
            gated.open_all()
            bare = parsed(read_all(sock))
        thread.join(60)
    stored = spool.read(handle.id)
    for seen in (chunked[0], bare):
        assert output_of(seen) == stored
        assert (seen[-1].kind, seen[-1].data["status"]) == ("status", "succeeded")


def test_a_client_that_stops_reading_leaves_the_fanout_and_holds_little(
    db_path: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client stops reading while the program writes 16 MiB: the other follower gets it
    all at once; the stalled connection leaves the fan-out with at most about
    fanout.BEHIND bytes waiting in the server (not the output the others were sent),
    then gets every byte in order once it reads again."""
    made: list[wire.Wire] = []
    attach = wire.attach

    def recording(cycle: Any) -> None:
        attach(cycle)
        found = wire.wire_of(cycle.scope)
        if found is not None:
            made.append(found)

    monkeypatch.setattr(wire, "attach", recording)
    gate = tmp_path / "go"
    program = (
        "import os, time\nprint('first', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.005)\n"
        "for i in range(256):\n    os.write(1, b'%05d' % i + b'.' * 65530 + b'\\n')\n"
    )
    small = msgspec.structs.replace(settings, max_chunk_size=64 * KiB)
    with Outspool(str(db_path), small) as spool:
        handle = spool.start([sys.executable, "-c", program])
        wait_until(lambda: b"first" in spool.read(handle.id), message="the first line")
        app = create_app(spool)
        hub: Hub = app.app.state.hub
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            path = f"/api/executions/{handle.id}/events"
            with raw_request(url, path, receive_buffer=4096) as slow:
                fast: list[list[Event]] = []
                thread = threading.Thread(target=lambda: fast.append(collect(client, path)))
                thread.start()
                wait_until(lambda: members(hub, handle.id) == 2, message="2 members")
                gate.touch()
                thread.join(120)
                assert fast, "the reading follower did not finish"
                stalled = [w for w in made if w.open]
                assert len(stalled) == 1
                # at most BEHIND, plus one write of PART chunks (a chunk can pass
                # max_chunk_size when the capture lags: the largest stored is the bound)
                chunks = spool.store.chunks_after(handle.id, -1, 1 << 20)
                largest = max(c.stdout_size + c.stderr_size for c in chunks)
                assert stalled[0].buffered() <= fanout.BEHIND + fanout.PART * (largest + 4 * KiB)
                bare = parsed(read_all(slow))
        stored = spool.read(handle.id)
    assert len(stored) > 16 << 20
    assert output_of(fast[0]) == stored
    assert output_of(bare) == stored
    assert (bare[-1].kind, bare[-1].data["status"]) == ("status", "succeeded")


def test_a_quiet_member_gets_its_keepalive_from_the_fanout(
    spool: Outspool, handles: list[Running], gated: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member of the fan-out is sent the keepalive comment once KEEPALIVE seconds passed
    without output, not at the waiter's wake-ups before, as a follower on its own is."""
    monkeypatch.setattr(streams, "KEEPALIVE", 0.3)
    monkeypatch.setattr(streams, "_WAIT", 0.02)
    handle = handles[-1]
    app = create_app(spool)
    hub: Hub = app.app.state.hub
    with running(app) as url, raw_request(url, f"/api/executions/{handle.id}/events") as sock:
        received = last = b""
        while b": keepalive" not in last:
            last = sock.recv(65536)
            received += last
            if b": keepalive" not in last:
                since = time.monotonic()  # the last output seen before the keepalive
        quiet = time.monotonic() - since
        assert b"line 0" in received
        assert members(hub, handle.id) == 1  # it came from the fan-out
        gated.open_all()
        received += read_all(sock)
    assert quiet >= 0.15  # not at a wake-up (every 0.02 s): after about KEEPALIVE
    assert output_of(parsed(received)) == spool.read(handle.id)


def test_without_a_wire_every_stream_sends_through_asgi(
    spool: Outspool, handles: list[Running], gated: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A uvicorn whose cycle lacks what a wire reads gives no wire: followers still get every
    byte, each through its own task, and none joins a fan-out."""
    monkeypatch.setattr(wire, "_CYCLE", (*wire._CYCLE, "not_in_this_uvicorn"))
    handle = handles[-1]
    app = create_app(spool)
    hub: Hub = app.app.state.hub
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        path = f"/api/executions/{handle.id}/events"
        with client.stream("GET", path) as response:
            stream = events(response)
            seen = [next(stream)]
            while b"line 0" not in output_of(seen):
                seen.append(next(stream))
            waiter = wait_until(lambda: hub.waiters.get(handle.id), message="a waiter")
            wait_until(lambda: waiter.reader is not None, message="caught up")
            assert members(hub, handle.id) == 0  # with a wire, it joins as it catches up
            gated.open_all()
            seen += list(stream)
    assert output_of(seen) == spool.read(handle.id)
