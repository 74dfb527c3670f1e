"""Tagged pieces for the page (``/pieces``) and the size of the live stream."""

from __future__ import annotations

import base64
import sys
from functools import partial
from pathlib import Path

import httpx

from outspool import Outspool, Running
from outspool.codec import decode
from outspool.models import Stream
from tests.helpers import wait_until
from tests.web.programs import BINARY
from tests.web.sse import collect, output_of
from tests.web.test_api import py

#: Writes each step's bytes to its stream, then waits for the file GATE.i.
PARTIAL_LINES = r"""
import os, sys, time
gate = sys.argv[1]
steps = [(1, b"abc"), (2, b"e1\ne2"), (1, b"def\n"), (2, b"\n"), (1, b"xyz\n"), (2, b"tail")]
for i, (fd, data) in enumerate(steps):
    os.write(fd, data)
    while not os.path.exists(f"{gate}.{i}"):
        time.sleep(0.002)
"""
STEPS = [3, 5, 4, 1, 4, 4]  # bytes written per step


def piece_bytes(piece: dict[str, object]) -> bytes:
    assert ("text" in piece) != ("data" in piece), piece  # the bytes are sent once
    if "text" in piece:
        return str(piece["text"]).encode()
    data = base64.b64decode(str(piece["data"]))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    raise AssertionError(f"valid UTF-8 sent as base64: {data!r}")


def test_pieces_carry_each_byte_once_with_its_stream(spool: Outspool, client: httpx.Client) -> None:
    ex = spool.run(py(BINARY))
    streams = {Stream.STDOUT: b"", Stream.STDERR: b""}
    merged = b""
    offset = 0
    while True:
        page = client.get(f"/api/executions/{ex.id}/pieces", params={"offset": offset, "limit": 7})
        assert page.status_code == 200
        body = page.json()
        for piece in body["pieces"]:
            assert piece["offset"] == len(merged)
            data = piece_bytes(piece)
            streams[Stream[piece["stream"].upper()]] += data
            merged += data
        offset = body["next_offset"]
        if body["eof"]:
            break
    assert merged == spool.read(ex.id)
    for stream, data in streams.items():
        assert data == spool.read(ex.id, stream)


def stored(handle: Running, size: int) -> bool:
    ex = handle.execution()
    return ex.stdout_size + ex.stderr_size >= size


def reference_boundaries(spool: Outspool, execution_id: str) -> dict[int, int]:
    """Offsets where no line of either stream is open -> lines started before, byte by byte."""
    tagged = []
    for record in spool.store.chunks_after(execution_id, -1, 1000):
        tagged += decode(record).tagged()
    found = {0: 0}
    lines, pos, open_streams = 0, 0, set()
    for stream, data in tagged:
        for byte in data:
            if stream not in open_streams:
                lines += 1
                open_streams.add(stream)
            if byte == ord("\n"):
                open_streams.discard(stream)
            pos += 1
            if not open_streams:
                found[pos] = lines
    return found


def test_lines_start_at_a_boundary_where_no_line_is_open(
    spool: Outspool, client: httpx.Client, handles: list[Running], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    handle = spool.start([sys.executable, "-c", PARTIAL_LINES, str(gate)])
    handles.append(handle)
    written = 0
    for step, size in enumerate(STEPS):  # each write is stored before the next one is made
        written += size
        wait_until(partial(stored, handle, written), message=f"step {step} stored")
        Path(f"{gate}.{step}").touch()
    assert handle.wait().status.finished
    boundaries = reference_boundaries(spool, handle.id)
    assert sorted(boundaries) == [0, 13, 17]  # "abc" "e1\ne2" "def\n" "\n" | "xyz\n" | "tail"
    for offset in range(written + 2):
        body = client.get(
            f"/api/executions/{handle.id}/pieces", params={"offset": offset, "lines": "true"}
        ).json()
        start = max(b for b in boundaries if b <= offset)
        assert (body["offset"], body["line"]) == (start, boundaries[start]), offset


def test_the_live_stream_sends_the_bytes_once(spool: Outspool, client: httpx.Client) -> None:
    code = "for i in range(20000): print(f'{i:06d} the quick brown fox jumps over the lazy dog')"
    ex = spool.run(py(code))
    size = ex.stdout_size + ex.stderr_size
    with client.stream("GET", f"/api/executions/{ex.id}/events") as response:
        wire = b"".join(response.iter_bytes())
    found = collect(client, f"/api/executions/{ex.id}/events")
    assert output_of(found) == spool.read(ex.id)
    print(f"\nevent stream: {len(wire)} bytes for {size} bytes of output ({len(wire) / size:.3f}x)")
    assert len(wire) < size * 1.1


def test_the_page_is_served_for_an_execution_address(client: httpx.Client) -> None:
    response = client.get("/x/0123456789abcdef")
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert '<script type="module" src="/static/app.js">' in response.text
