"""Starting the server: the exposure policy, the listening socket, uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import uvicorn

from outspool.client import Outspool
from outspool.errors import ConfigError
from outspool.settings import Settings
from outspool.web.app import create_app
from outspool.web.limits import ACCEPT_BATCH, protocol, quiet_descriptor_errors

log = logging.getLogger("outspool.web")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token: the API runs programs."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token (anyone reaching it could run "
            "programs): pass --token or set OUTSPOOL_TOKEN, or bind 127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket for ``host:port`` (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, IndexError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def make_server(
    app: Any,
    log_level: str = "warning",
    *,
    request_timeout: float = 10.0,
    max_connections: int = 1000,
) -> uvicorn.Server:
    """uvicorn over ``app`` with the limits of :mod:`outspool.web.limits`."""
    quiet_descriptor_errors()
    config = uvicorn.Config(
        app,
        http=protocol(request_timeout, max_connections),
        backlog=ACCEPT_BATCH,
        log_level=log_level,
        access_log=False,
        ws="none",
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def serve(
    db: str | None,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
) -> None:
    """Serve the monitor until interrupted (SIGINT/SIGTERM)."""
    check_exposure(host, token)
    sock = listen(host, port)
    with sock, Outspool(db, settings, kind="serve") as spool:
        server = make_server(
            create_app(spool, token=token),
            request_timeout=settings.request_timeout,
            max_connections=settings.max_connections,
        )
        hint = " (open it once with ?token=<token>)" if token else ""
        log.info("serving %s at %s%s", spool.describe(), url_of(sock), hint)
        server.run(sockets=[sock])
