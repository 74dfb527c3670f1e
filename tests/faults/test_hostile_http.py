"""Clients that never finish a request, or open too many connections, cannot sink the server."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from outspool import Outspool
from outspool.web.app import create_app
from tests.helpers import CLI, cli_env, wait_until
from tests.web.conftest import running


@contextlib.contextmanager
def server(spool: Outspool, **limits: float) -> Iterator[tuple[str, int]]:
    """An in-process server with these limits; yields (host, port)."""
    with running(create_app(spool), **limits) as url:
        found = re.match(r"http://([\d.]+):(\d+)/", url)
        assert found
        yield found.group(1), int(found.group(2))


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=30)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (30 s at most)."""
    out = bytearray()
    while piece := sock.recv(65536):
        out += piece
    return bytes(out)


def test_a_half_sent_request_is_answered_408_and_closed(spool: Outspool) -> None:
    with server(spool, request_timeout=0.3) as address:
        for partial in (
            b"GET /api/executions HTTP/1.1\r\nHost: 127.0.0.1",  # headers never end
            b"",  # connects and says nothing
            b"POST /api/executions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",  # body never ends
        ):
            with connect(address) as sock:
                sock.sendall(partial)
                answer = read_until_closed(sock)  # on a server without a deadline: hangs
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"did not arrive in time" in answer


def test_an_idle_keep_alive_connection_that_starts_a_request_is_still_bounded(
    spool: Outspool,
) -> None:
    with server(spool, request_timeout=0.3) as address, connect(address) as sock:
        sock.sendall(b"GET /api/executions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"G")  # one byte, which cancels uvicorn's own keep-alive timer
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408")


def test_a_streamed_response_is_not_cut_by_the_request_deadline(
    spool: Outspool, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    code = f"import os,time\nprint('a', flush=True)\nwhile not os.path.exists({str(gate)!r}):\n"
    code += "    time.sleep(0.01)\nprint('b', flush=True)\n"
    handle = spool.start(["python3", "-c", code], echo=False)
    try:
        with (
            server(spool, request_timeout=0.2) as address,
            httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=30) as client,
            client.stream("GET", f"/api/executions/{handle.id}/events") as events,
        ):
            lines = events.iter_lines()
            wait_for_output(lines, "a\n")
            passed = time.monotonic() + 0.6
            wait_until(lambda: time.monotonic() > passed, message="the deadline to pass")
            gate.touch()
            wait_for_output(lines, "b\n")
    finally:
        gate.touch()
        handle.wait(30)


def wait_for_output(lines: Iterator[str], text: str) -> None:
    """Read server-sent events until the output so far ends with ``text``."""
    seen = ""
    while not seen.endswith(text):
        line = next(lines)
        if line.startswith("data: ") and '"stream"' in line:
            seen += json.loads(line.removeprefix("data: "))["text"]


def test_beyond_the_connection_cap_a_new_connection_gets_503_at_once(spool: Outspool) -> None:
    with server(spool, request_timeout=60, max_connections=4) as address:
        idle = [connect(address) for _ in range(4)]
        try:
            wait_until(lambda: _answered(address) == 503, message="the fifth connection refused")
            with connect(address) as extra:
                answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"too many connections" in answer
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: _answered(address) == 200, message="room again once they closed")


def _answered(address: tuple[str, int]) -> int:
    url = f"http://{address[0]}:{address[1]}/api/executions"
    try:
        return httpx.get(url, timeout=30).status_code
    except httpx.TransportError:
        return 0


def test_hundreds_of_idle_connections_under_a_low_fd_limit_do_not_stop_answers(
    tmp_path: Path,
) -> None:
    env = cli_env({"OUTSPOOL_REQUEST_TIMEOUT": "1"})
    db = str(tmp_path / "x.db")
    proc = subprocess.Popen(
        # soft and hard limit: the server cannot raise it
        ["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh", *CLI, "serve", "--db", db, "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sockets: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        found = re.search(r"at http://([\d.]+):(\d+)/", line)
        assert found, line
        address = (found.group(1), int(found.group(2)))
        for _ in range(400):  # more than the server has descriptors for
            sock = socket.socket()
            sock.settimeout(30)
            with contextlib.suppress(OSError):
                sock.connect(address)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1")
            sockets.append(sock)
        wait_until(lambda: _answered(address) == 200, message="an answer despite them")
    finally:
        for sock in sockets:
            sock.close()
        proc.terminate()
        proc.wait(30)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.stderr.close()
    assert b"Traceback" not in rest
    assert len(rest) < 10_000
