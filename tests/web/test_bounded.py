"""Limits and deletion over HTTP: the gap in /output, counts in /raw, DELETE, retention."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from outspool import Outspool, Settings
from outspool.web.app import create_app
from tests.helpers import wait_until
from tests.web.conftest import running

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
    raw = client.get(f"/api/executions/{ex.id}/raw", params={"stream": "stdout"})
    assert raw.content == OUT[:512] + OUT[-512:]
    assert raw.headers["x-outspool-stdout-dropped"] == str(len(OUT) - 1024)
    assert raw.headers["x-outspool-stderr-dropped"] == "0"
    shown = client.get(f"/api/executions/{ex.id}").json()
    assert shown["stdout_dropped"] == len(OUT) - 1024


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
