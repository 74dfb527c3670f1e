"""Limits and deletion over HTTP: the gap in /output, counts in /raw, DELETE, retention."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from outspool import Outspool, Settings
from outspool.web.app import create_app
from tests.helpers import wait_until
from tests.web.conftest import running
from tests.web.sse import collect, output_of

LINES = "for i in range(1000): print(f'line {i:04d}')"
OUT = b"".join(f"line {i:04d}\n".encode() for i in range(1000))


def test_output_and_raw_say_what_was_dropped(spool: Outspool, client: httpx.Client) -> None:
    ex = spool.run([sys.executable, "-c", LINES], max_output=1024)
    head = client.get(f"/api/executions/{ex.id}/output", params={"stream": "stdout"}).json()
    assert (head["offset"], head["next_offset"], head["dropped"]) == (0, 512, 0)
    after = client.get(
        f"/api/executions/{ex.id}/output", params={"stream": "stdout", "offset": 512}
    ).json()
    assert after["dropped"] == len(OUT) - 1024
    assert after["text"].encode() == OUT[-512:]
    timed = client.get(
        f"/api/executions/{ex.id}/output", params={"offset": 600, "timestamps": "true"}
    ).json()
    positions = [pos for pos, _ in timed["line_times"]]
    assert positions[:2] == [timed["dropped"], timed["dropped"] + 2]  # "8\n", then "line 0949"
    assert timed["offset"] + positions[1] == 9490
    raw = client.get(f"/api/executions/{ex.id}/raw", params={"stream": "stdout"})
    assert raw.content == OUT[:512] + OUT[-512:]
    assert raw.headers["x-outspool-stdout-dropped"] == str(len(OUT) - 1024)
    assert raw.headers["x-outspool-stderr-dropped"] == "0"
    shown = client.get(f"/api/executions/{ex.id}").json()
    assert shown["stdout_dropped"] == len(OUT) - 1024


def test_pieces_and_events_mark_the_gap(spool: Outspool, client: httpx.Client) -> None:
    ex = spool.run([sys.executable, "-c", LINES], max_output=1024)
    dropped = len(OUT) - 1024
    got = client.get(f"/api/executions/{ex.id}/pieces", params={"lines": "true"}).json()
    gaps = [p for p in got["pieces"] if "dropped" in p]
    assert gaps == [{"stream": "stdout", "offset": 512, "dropped": dropped}]
    assert got["next_offset"] == len(OUT)
    inside = client.get(f"/api/executions/{ex.id}/pieces", params={"offset": 600}).json()
    assert inside["pieces"][0] == {"stream": "stdout", "offset": 600, "dropped": dropped - 88}
    late: dict[str, str | int] = {
        "offset": 9905,
        "lines": "true",
    }  # in "line 0990": numbered as the page numbers
    numbered = client.get(f"/api/executions/{ex.id}/pieces", params=late).json()
    assert (numbered["offset"], numbered["line"]) == (9900, 51 + 1 + 1 + 1 + 41)
    found = collect(client, f"/api/executions/{ex.id}/events")
    marks = [e for e in found if e.kind == "gap"]
    assert [(e.data, e.id) for e in marks] == [(gaps[0], str(512 + dropped))]
    assert output_of(found) == OUT[:512] + OUT[-512:]


def test_delete_is_204_then_404_and_409_while_running(
    spool: Outspool, client: httpx.Client
) -> None:
    ex = spool.run([sys.executable, "-c", "print('bye')"])
    assert client.delete(f"/api/executions/{ex.id}").status_code == 204
    gone = client.delete(f"/api/executions/{ex.id}")
    assert gone.status_code == 404
    assert "error" in gone.json()
    running = spool.start(["sleep", "60"])
    wait_until(lambda: spool.get(running.id).pid is not None, message="started")
    refused = client.delete(f"/api/executions/{running.id}")
    assert refused.status_code == 409
    assert (
        client.delete(f"/api/executions/{running.id}", params={"force": "true"}).status_code == 204
    )
    assert client.get(f"/api/executions/{running.id}").status_code == 404


def test_serve_applies_retention(tmp_path: Path) -> None:
    settings = Settings.load(retention_keep_last=1)
    with Outspool(str(tmp_path / "kept.db"), settings) as spool:
        ids = [spool.run([sys.executable, "-c", f"print({i})"]).id for i in range(3)]
        with running(create_app(spool)):
            wait_until(lambda: len(spool.list()) == 1, message="retention pruned")
        assert [ex.id for ex in spool.list()] == [ids[-1]]
