"""Submitting and cancelling over HTTP; a real worker runs what was queued."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from outspool import Outspool, Running
from outspool.models import Status
from tests.helpers import CLI, cli_env, wait_until
from tests.web.programs import Gate


def run_worker(db: Path) -> None:
    """``outspool worker --burst`` as a real process, to its end."""
    done = subprocess.run(
        [*CLI, "worker", "--burst", "--db", str(db)],
        env=cli_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_submit_queues_for_a_worker(client: httpx.Client, db_path: Path) -> None:
    body = {"language": "python", "code": "print('from the web')", "name": "web", "timeout": 30}
    response = client.post("/api/executions", json=body)
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "queued"
    assert record["name"] == "web"
    assert response.headers["location"] == f"/api/executions/{record['id']}"
    command = client.post(
        "/api/executions",
        json={
            "command": ["sh", "-c", "echo $GREETING; pwd"],
            "env": {"GREETING": "hello"},
            "cwd": str(db_path.parent),
        },
    )
    assert command.status_code == 201
    run_worker(db_path)
    done = client.get(f"/api/executions/{record['id']}").json()
    assert done["status"] == "succeeded"
    out = client.get(f"/api/executions/{record['id']}/output").json()
    assert out["text"] == "from the web\n"
    second = client.get(f"/api/executions/{command.json()['id']}/output").json()
    assert second["text"] == f"hello\n{db_path.parent}\n"


def test_submit_on_a_pseudo_terminal(client: httpx.Client, db_path: Path) -> None:
    body = {"command": ["sh", "-c", "test -t 1 && echo on a tty"], "pty": True}
    record = client.post("/api/executions", json=body).json()
    assert record["pty"] is True
    run_worker(db_path)
    out = client.get(f"/api/executions/{record['id']}/output").json()
    assert out["text"] == "on a tty\r\n"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"language": "cobol", "code": "x"}, 400),
        ({"language": "python"}, 422),
        ({"command": ["true"], "language": "python", "code": "x"}, 422),
        ({}, 422),
        ({"command": []}, 422),
        ({"command": "true"}, 422),
        ({"command": ["true"], "timeout": -1}, 422),
        ({"command": ["true"], "timeout": 0}, 422),
        ({"command": ["tr\0ue"]}, 422),
        ({"command": ["true"], "env": {"A=B": "c"}}, 422),
        ({"command": ["true"], "surprise": 1}, 422),
    ],
)
def test_bad_submissions_are_4xx_json(
    client: httpx.Client, body: dict[str, Any], status: int
) -> None:
    response = client.post("/api/executions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    "raw", [b"{", b"[1]", b"\xff", b"NaN", b'{"command": ["x"], "timeout": Infinity}']
)
def test_malformed_json_is_4xx_json(client: httpx.Client, raw: bytes) -> None:
    response = client.post(
        "/api/executions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert response.json()["error"]


def test_cancel_a_queued_execution(client: httpx.Client) -> None:
    record = client.post("/api/executions", json={"command": ["true"]}).json()
    cancelled = client.post(f"/api/executions/{record['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/executions/{record['id']}/cancel")
    assert again.status_code == 409
    assert "already ended" in again.json()["error"]


def test_cancel_a_running_execution(
    spool: Outspool, client: httpx.Client, handles: list[Running], tmp_path: Path
) -> None:
    gate = Gate(tmp_path, 1)
    handle = spool.start(gate.command())
    handles.append(handle)
    wait_until(lambda: b"line 0" in spool.read(handle.id), message="the program to print")
    response = client.post(f"/api/executions/{handle.id}/cancel")
    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True
    assert handle.wait(30).status is Status.CANCELLED


def test_submit_with_limits_and_secrets(client: httpx.Client, db_path: Path) -> None:
    secret = "s3cr3t-value-42"
    body = {
        "command": ["sh", "-c", 'echo "t=$API_TOKEN"'],
        "cpu_time": 10,
        "memory": 200_000_000,
        "max_processes": 64,
        "max_file_size": 1_000_000,
        "secrets": {"API_TOKEN": secret},
    }
    response = client.post("/api/executions", json=body)
    assert response.status_code == 201
    assert secret not in response.text
    record = response.json()
    assert (record["cpu_time"], record["memory"], record["max_processes"]) == (10, 200_000_000, 64)
    run_worker(db_path)
    out = client.get(f"/api/executions/{record['id']}/output").json()
    assert out["text"] == "t=[MASKED]\n"
    listed = client.get("/api/executions").text
    assert secret not in listed
    short = client.post("/api/executions", json={"command": ["true"], "secrets": {"A": "short"}})
    assert short.status_code == 422
