"""Fixtures for the web layer: a real uvicorn server in a thread over a real SQLite store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from outspool import Outspool
from outspool.web.app import create_app
from outspool.web.server import listen, make_server, url_of
from outspool.web.streams import Hub
from tests.helpers import wait_until


@dataclass
class Served:
    """A running server: its address, the app and the library handle behind it."""

    url: str
    app: Any
    spool: Outspool

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.app.state.hub
        return hub

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)


@contextmanager
def running(app: Any, **limits: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread until the block ends.

    ``limits`` go to :func:`make_server` (``request_timeout``, ``max_connections``).
    """
    sock = listen("127.0.0.1", 0)
    server = make_server(app, **limits)
    server.config.timeout_graceful_shutdown = 1
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), message="server start")
        assert server.started, "the server thread ended before it started serving"
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(spool: Outspool) -> Iterator[ServeFactory]:
    """Start a server over ``spool`` (options go to create_app); stopped at teardown."""
    stack: list[Any] = []

    def start(**options: Any) -> Served:
        app = create_app(spool, **options)
        ctx = running(app)
        url = ctx.__enter__()
        stack.append(ctx)
        return Served(url, app, spool)

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def served(serve: ServeFactory) -> Served:
    return serve()


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c
