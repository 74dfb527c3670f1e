"""Absurd inputs are refused at every edge (CLI, API, library) in one clear line."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import httpx
import pytest

from outspool import Outspool, Settings, Status
from outspool.errors import ConfigError
from outspool.jobs import Job
from outspool.queue import submit
from outspool.settings import MAX_TIMEOUT
from tests.acceptance.test_mistakes import assert_one_clear_line
from tests.helpers import run_cli
from tests.integration.test_worker import wait_status

ABSURD_TIMEOUTS = ["inf", "1e308", "nan", "-1", "0", "-inf", str(MAX_TIMEOUT * 2)]
NOT_UTF8 = "caf\udce9"  # b"caf\xe9" from a Latin-1 terminal, as Python hands it over


def nothing_stored(db: Path) -> bool:
    if not db.exists():
        return True
    listing = run_cli("ls", "--db", str(db), "--json")
    return listing.rc == 0 and json.loads(listing.stdout) == []


@pytest.mark.parametrize("timeout", ABSURD_TIMEOUTS)
@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_refuses_absurd_timeouts(db_path: Path, command: str, timeout: str) -> None:
    result = run_cli(command, "--db", str(db_path), "--timeout", timeout, "--", "true")
    assert_one_clear_line(result, "--timeout", "366 days")
    assert nothing_stored(db_path)


@pytest.mark.parametrize("timeout", [math.inf, 1e308, math.nan, -1.0, 0.0])
def test_library_refuses_absurd_timeouts(spool: Outspool, timeout: float) -> None:
    with pytest.raises(ConfigError, match="366 days"):
        spool.start(["true"], timeout=timeout, echo=False)
    with pytest.raises(ConfigError, match="366 days"):
        submit(spool.store, spool.settings, Job(command=("true",), timeout=timeout))
    assert spool.list() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"command": ["true"], "timeout": Infinity}',
        b'{"command": ["true"], "timeout": NaN}',
        b'{"command": ["true"], "timeout": 1e308}',
        b'{"command": ["true"], "timeout": -1}',
        b'{"command": ["true"], "name": "caf\\udce9"}',
        b'{"command": ["true"], "cwd": "/tmp/\\ud800"}',
    ],
)
def test_the_api_refuses_absurd_input(client: httpx.Client, body: bytes) -> None:
    response = client.post(
        "/api/executions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert "error" in response.json()
    assert client.get("/api/executions").json()["executions"] == []


def test_the_longest_timeout_is_accepted(spool: Outspool) -> None:
    ex = submit(spool.store, spool.settings, Job(command=("true",), timeout=MAX_TIMEOUT))
    assert ex.timeout == MAX_TIMEOUT


@pytest.mark.parametrize(
    ("command", "option"), [("run", "--name"), ("submit", "--name"), ("submit", "--cwd")]
)
def test_text_that_is_not_utf8_is_one_line(db_path: Path, command: str, option: str) -> None:
    result = run_cli(command, "--db", str(db_path), option, NOT_UTF8, "--", "true")
    assert_one_clear_line(result, option.lstrip("-"), "UTF-8")
    assert nothing_stored(db_path)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OUTSPOOL_BUSY_TIMEOUT", "1e308"),
        ("OUTSPOOL_BUSY_TIMEOUT", "nan"),
        ("OUTSPOOL_KILL_GRACE", "inf"),
        ("OUTSPOOL_DRAIN_GRACE", "1e308"),
        ("OUTSPOOL_HEARTBEAT_TIMEOUT", "inf"),
        ("OUTSPOOL_HEARTBEAT_INTERVAL", "1e308"),
        ("OUTSPOOL_SHUTDOWN_GRACE", "nan"),
        ("OUTSPOOL_IDLE_FLUSH_DELAY", "1e308"),
        ("OUTSPOOL_MAX_PENDING_BYTES", "99999999999999999999999"),
        ("OUTSPOOL_LIMIT_PROCESSES", "99999999999999999999999"),
    ],
)
def test_every_setting_has_a_range(db_path: Path, variable: str, value: str) -> None:
    result = run_cli("run", "--db", str(db_path), "--", "true", env={variable: value})
    assert_one_clear_line(result, variable.removeprefix("OUTSPOOL_").lower())
    assert not db_path.exists()


def test_numeric_settings_all_have_an_upper_bound() -> None:
    for name, value in [("busy_timeout", 1e308), ("heartbeat_timeout", math.inf)]:
        with pytest.raises(ConfigError, match=name):
            Settings.load(**{name: value})


@pytest.mark.parametrize("url", ["mysql://x/y", "http://example.com/db", "sqlite://relative"])
def test_unknown_database_url_schemes_are_refused(tmp_path: Path, url: str) -> None:
    result = run_cli("ls", "--db", url, cwd=tmp_path)
    assert_one_clear_line(result, url.partition(":")[0])
    assert list(tmp_path.iterdir()) == []  # no file like ./mysql:/x/y was created


def test_a_worker_ends_a_stored_absurd_timeout_as_failed(db_path: Path) -> None:
    # a queue written before timeouts were checked may hold one: the worker must survive it
    with Outspool(str(db_path)) as spool:
        bad = submit(spool.store, spool.settings, Job(command=("echo", "never"))).id
        good = submit(spool.store, spool.settings, Job(command=("echo", "fine"))).id
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE executions SET timeout = ? WHERE id = ?", (1e308, bad))
    conn.close()
    done = run_cli("worker", "--db", str(db_path), "--burst")
    assert done.rc == 0, done.stderr
    assert b"Traceback" not in done.stderr
    failed = wait_status(str(db_path), bad, "failed")
    assert "366 days" in str(failed["reason"])
    assert wait_status(str(db_path), good, "succeeded")["status"] == "succeeded"
    with Outspool(str(db_path)) as spool:
        assert spool.get(bad).status is Status.FAILED
