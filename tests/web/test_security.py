"""Who may talk to the server: tokens, loopback names, origins; and the serve command."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx
import pytest

from tests.helpers import run_cli
from tests.web.conftest import ServeFactory

TOKEN = "s3cret token;="


def test_a_token_is_needed_on_every_request(serve: ServeFactory) -> None:
    served = serve(token=TOKEN)
    with served.client() as anon:
        for path in ["/", "/api/executions", "/static/app.js", "/api/openapi.json"]:
            response = anon.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (
            anon.get("/api/executions", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
    with served.client(headers={"Authorization": f"Bearer {TOKEN}"}) as bearer:
        assert bearer.get("/api/executions").status_code == 200
        assert bearer.get("/").status_code == 200


def test_the_page_takes_the_token_once_into_a_cookie(serve: ServeFactory) -> None:
    served = serve(token=TOKEN)
    with served.client() as browser:
        wrong = browser.get("/", params={"token": "guess"})
        assert wrong.status_code == 401
        first = browser.get("/", params={"token": TOKEN, "x": "1"})
        assert first.status_code == 303
        assert first.headers["location"] == "/?x=1"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert browser.get("/").status_code == 200  # the cookie jar now holds it
        assert browser.get("/api/executions").status_code == 200


def test_another_apps_cookie_before_ours_does_not_hide_it(serve: ServeFactory) -> None:
    served = serve(token=TOKEN)
    ours = f"outspool_token={quote(TOKEN, safe='')}"
    with served.client() as anon:
        for header in (f'prefs={{"a":1}}; {ours}', f"{ours}; x=y", f"a=b;{ours};c=[d]"):
            response = anon.get("/api/executions", headers={"Cookie": header})
            assert response.status_code == 200, header
        stranger = anon.get("/api/executions", headers={"Cookie": 'prefs={"a":1}'})
        assert stranger.status_code == 401


@pytest.mark.parametrize("path", ["//evil.example/", "/\\evil.example/", "///evil.example/x"])
def test_the_token_exchange_never_redirects_off_site(serve: ServeFactory, path: str) -> None:
    served = serve(token=TOKEN)
    query = urlencode({"token": TOKEN})
    url = httpx.URL(served.url).copy_with(raw_path=f"{path}?{query}".encode())
    with served.client() as browser:
        response = browser.get(url)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/")
    assert not location.startswith(("//", "/\\"))
    assert urlsplit(urljoin(served.url, location)).netloc == urlsplit(served.url).netloc


def test_without_a_token_only_loopback_names_are_answered(
    served: object, client: httpx.Client
) -> None:
    assert client.get("/api/executions", headers={"Host": "localhost:1"}).status_code == 200
    rebound = client.get("/api/executions", headers={"Host": "evil.example"})
    assert rebound.status_code == 421
    assert "loopback" in rebound.json()["error"]


def test_cross_site_posts_are_refused(client: httpx.Client) -> None:
    response = client.post(
        "/api/executions/0000000000000000/cancel", headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403


def test_the_page_is_served_with_a_strict_policy(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    done = run_cli("serve", "--db", str(tmp_path / "x.db"), "--host", "0.0.0.0", "--port", "0")
    assert done.rc == 2
    assert len(done.err_lines) == 1
    assert "without a token" in done.err_lines[0]


def test_serve_command_answers(
    tmp_path: Path, spawn_cli: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = spawn_cli("serve", "--db", str(tmp_path / "x.db"), "--port", "0", "--token", TOKEN)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    assert found, line
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.get(found.group(1) + "api/executions", headers=headers, timeout=30)
    assert response.json() == {"executions": [], "next": None}
    proc.terminate()
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    assert b"Traceback" not in proc.stderr.read()
