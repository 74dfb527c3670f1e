"""The JSON API against a real server over a real SQLite store."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outspool import Outspool
from outspool.models import Execution, Stream
from tests.web.programs import BINARY
from tests.web.sse import collect, output_of

STREAMS = {"stdout": Stream.STDOUT, "stderr": Stream.STDERR, "all": None}
FIXTURES_OK = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
def binary(spool: Outspool) -> Execution:
    return spool.run(py(BINARY))


def test_list_is_newest_first_and_pages_with_a_cursor(
    spool: Outspool, client: httpx.Client
) -> None:
    made = [spool.run(py(f"print({i})"), name=f"job{i}").id for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["before"] = cursor
        page = client.get("/api/executions", params=params).json()
        assert len(page["executions"]) <= 2
        seen += [ex["id"] for ex in page["executions"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    failed = client.get("/api/executions", params={"status": "failed"}).json()
    assert failed == {"executions": [], "next": None}


def test_record_is_the_show_json(spool: Outspool, client: httpx.Client, binary: Execution) -> None:
    assert client.get(f"/api/executions/{binary.id}").json() == spool.get(binary.id).to_json()
    assert client.get(f"/api/executions/{binary.id[:12]}").json()["id"] == binary.id


@FIXTURES_OK
@given(
    stream=st.sampled_from(list(STREAMS)),
    offset=st.integers(0, 120),
    limit=st.integers(1, 130),
)
def test_output_ranges_are_exact(
    spool: Outspool, client: httpx.Client, binary: Execution, stream: str, offset: int, limit: int
) -> None:
    whole = spool.read(binary.id, STREAMS[stream])
    params: dict[str, str | int] = {"stream": stream, "offset": offset, "limit": limit}
    got = client.get(f"/api/executions/{binary.id}/output", params=params).json()
    expected = whole[offset : offset + limit]
    assert got["offset"] == offset
    assert got["size"] == len(expected)
    assert got["next_offset"] == offset + len(expected)
    assert got["text"] == expected.decode("utf-8", "replace")
    assert base64.b64decode(got["data"]) == expected


def test_tail_returns_the_last_lines(client: httpx.Client, spool: Outspool) -> None:
    ex = spool.run(py("for i in range(10): print(i)"))
    got = client.get(f"/api/executions/{ex.id}/tail", params={"lines": 3}).json()
    assert got["text"] == "7\n8\n9\n"
    assert got["next_offset"] == 20


def test_raw_is_the_exact_bytes_as_a_download(
    spool: Outspool, client: httpx.Client, binary: Execution
) -> None:
    for name, stream in STREAMS.items():
        response = client.get(f"/api/executions/{binary.id}/raw", params={"stream": name})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith("attachment;")
        assert response.content == spool.read(binary.id, stream)


def test_events_of_an_ended_execution(
    spool: Outspool, client: httpx.Client, binary: Execution
) -> None:
    found = collect(client, f"/api/executions/{binary.id}/events")
    assert output_of(found) == spool.read(binary.id)
    assert [e.kind for e in found][-1] == "status"
    assert found[-1].data["status"] == "succeeded"
    for event in found:
        if event.kind == "output":
            assert int(event.id or -1) == event.data["offset"] + len(event.bytes)
    stderr = b"".join(e.bytes for e in found if e.data.get("stream") == "stderr")
    assert stderr == "café stderr\n".encode()  # a character split across two writes


@FIXTURES_OK
@given(cut=st.integers(0, 200))
def test_last_event_id_resumes_without_gap_or_duplicate(
    spool: Outspool, client: httpx.Client, binary: Execution, cut: int
) -> None:
    whole = spool.read(binary.id)
    resumed = collect(
        client, f"/api/executions/{binary.id}/events", headers={"Last-Event-ID": str(cut)}
    )
    assert output_of(resumed) == whole[cut:]
    by_offset = collect(client, f"/api/executions/{binary.id}/events?offset={cut}")
    assert output_of(by_offset) == whole[cut:]


def test_unknown_ids_are_404_json(client: httpx.Client) -> None:
    for path in ["", "/output", "/tail", "/raw", "/events"]:
        response = client.get(f"/api/executions/0000000000000000{path}")
        assert response.status_code == 404
        assert "error" in response.json()
    for bad in ["%25", "ZZZ", "a" * 80, "..", "x%00"]:
        response = client.get(f"/api/executions/{bad}")
        assert response.status_code in (404, 422), bad
        assert "error" in response.json()
    assert client.post("/api/executions/0000000000000000/cancel").status_code == 404
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


@pytest.mark.parametrize(
    "query",
    [
        "offset=-1",
        "offset=x",
        "offset=99999999999999999999999",
        "limit=0",
        "limit=999999999",
        "stream=both",
    ],
)
def test_malformed_ranges_are_422_json(client: httpx.Client, binary: Execution, query: str) -> None:
    response = client.get(f"/api/executions/{binary.id}/output?{query}")
    assert response.status_code == 422
    assert response.json()["error"]


def test_malformed_last_event_id_is_400(client: httpx.Client, binary: Execution) -> None:
    path = f"/api/executions/{binary.id}/events"
    response = client.get(path, headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["error"]


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    big = {"language": "python", "code": "#" * (2 << 20)}
    response = client.post("/api/executions", json=big)
    assert response.status_code == 413
    assert "error" in response.json()

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    streamed = client.post(
        "/api/executions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
