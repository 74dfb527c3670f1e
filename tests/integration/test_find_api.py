"""The finding parts of the HTTP API on each backend: filters, line times, search,
/metrics, /healthz. A real server over a real store; metrics are read with
prometheus_client's parser."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from outspool import Outspool
from outspool.web.app import create_app
from outspool.when import parse_instant
from tests.postgres.database import admin
from tests.web.conftest import running


@pytest.fixture
def client(spool: Outspool) -> Iterator[httpx.Client]:
    with running(create_app(spool)) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def ids(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return [ex["id"] for ex in page.json()["executions"]]


def test_list_filters_by_name_labels_and_time(spool: Outspool, client: httpx.Client) -> None:
    a = spool.run(["true"], name="deploy", labels={"env": "prod", "app": "api"})
    b = spool.run(["false"], labels={"env": "prod", "app": "web"})
    assert ids(client.get("/api/executions", params={"name": "deploy"})) == [a.id]
    assert ids(client.get("/api/executions", params={"label": "env=prod"})) == [b.id, a.id]
    both = {"label": ["env=prod", "app=web"]}
    assert ids(client.get("/api/executions", params=both)) == [b.id]
    assert ids(client.get("/api/executions", params={"since": "1h", "status": "failed"})) == [b.id]
    assert client.get("/api/executions/deploy").json()["labels"] == {"env": "prod", "app": "api"}
    for bad in ({"label": "novalue"}, {"since": "soon"}):
        answer = client.get("/api/executions", params=bad)
        assert answer.status_code == 400 and "error" in answer.json()
    made = client.post("/api/executions", json={"command": ["true"], "labels": {"q": "1"}})
    assert made.status_code == 201 and made.json()["labels"] == {"q": "1"}


def test_output_line_times_mark_each_line_start(spool: Outspool, client: httpx.Client) -> None:
    ex = spool.run(py("import time\nfor i in range(5):\n print(i, flush=True); time.sleep(0.01)"))
    body = client.get(
        f"/api/executions/{ex.id}/output", params={"offset": 2, "timestamps": "true"}
    ).json()
    assert body["text"] == "1\n2\n3\n4\n"
    assert [pos for pos, _ in body["line_times"]] == [0, 2, 4, 6]
    times = [parse_instant(t) for _, t in body["line_times"]]
    assert times == sorted(times)
    assert ex.started_at is not None and int(ex.started_at) <= times[0]
    assert "line_times" not in client.get(f"/api/executions/{ex.id}/output").json()


def test_search_finds_lines_like_grep(spool: Outspool, client: httpx.Client) -> None:
    ex = spool.run(py("print('alpha'); print('Beta'); print('alphabet')"), labels={"s": "1"})
    spool.run(py("print('alpha elsewhere')"))
    found = client.get("/api/search", params={"pattern": "^alpha", "id": ex.id}).json()
    assert found == {
        "matches": [
            {"id": ex.id, "line": 1, "text": "alpha"},
            {"id": ex.id, "line": 3, "text": "alphabet"},
        ],
        "truncated": False,
    }
    labelled = client.get(
        "/api/search", params={"pattern": "beta", "label": "s=1", "ignore_case": "true"}
    ).json()
    assert labelled["matches"] == [{"id": ex.id, "line": 2, "text": "Beta"}]
    capped = client.get("/api/search", params={"pattern": "alpha", "limit": 1}).json()
    assert capped["truncated"] is True and len(capped["matches"]) == 1
    bad = client.get("/api/search", params={"pattern": "(open"})
    assert bad.status_code == 400 and "error" in bad.json()
    # a pattern Python flags with a FutureWarning ("possible nested set") is still valid:
    # it answered 500 while warnings were errors (found by tests/web/test_schema.py)
    nested = client.get("/api/search", params={"pattern": "[[a]", "id": ex.id})
    assert nested.status_code == 200
    assert [m["line"] for m in nested.json()["matches"]] == [1, 2, 3]  # "[" or "a"


def test_metrics_parse_and_count(spool: Outspool, client: httpx.Client) -> None:
    spool.run(py("print('x' * 1000)"))
    spool.run(["false"])
    spool.submit(["true"])
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    by_status = {s.labels["status"]: s.value for s in families["outspool_executions"].samples}
    assert by_status["succeeded"] == 1 and by_status["failed"] == 1 and by_status["queued"] == 1
    assert families["outspool_queue_depth"].samples[0].value == 1
    assert families["outspool_running_executions"].samples[0].value == 0
    assert families["outspool_lost_executions"].samples[0].value == 0
    assert families["outspool_captured_bytes"].samples[0].value == 1001
    assert 0 < families["outspool_stored_bytes"].samples[0].value <= 1001
    commits = families["outspool_commit_seconds"]
    count = next(s.value for s in commits.samples if s.name == "outspool_commit_seconds_count")
    assert count >= 1  # this process's writer committed the output
    for name in ("outspool_writer_retries", "outspool_writer_pending_bytes"):
        assert name in families


def test_healthz_answers_200_then_503_when_the_store_fails(
    spool: Outspool, client: httpx.Client, db_url: str
) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    if db_url.startswith("postgresql"):
        schema = db_url.rsplit("schema=", 1)[1]
        with admin() as conn:
            conn.execute(f'DROP TABLE "{schema}".executions CASCADE')
    else:
        with sqlite3.connect(db_url) as conn:
            conn.execute("DROP TABLE executions")
    broken = client.get("/healthz")
    assert broken.status_code == 503
    assert broken.json()["status"] == "unavailable"
