"""Who may talk to the server, and how big a request may be: one ASGI middleware.

* With a token, every request needs ``Authorization: Bearer <token>`` or the
  ``outspool_token`` cookie. Opening any page with ``?token=<token>`` once sets
  that cookie (HttpOnly, SameSite=Strict) and redirects to the same address
  without the token, so it stays out of the address bar and history.
  ``EventSource`` cannot send headers; the cookie is how the page follows.
* Without a token (loopback only), the ``Host`` header must name a loopback
  address, so a web page cannot reach the server through DNS rebinding.
* A request that changes something and carries an ``Origin`` must come from
  the server's own origin (no cross-site form posts).
* Request bodies are read up to ``max_body`` bytes; more is answered 413.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "outspool_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Paths that need no token: a health check reveals nothing but "up" or "down".
OPEN = frozenset({"/healthz"})


class BodyTooLarge(Exception):
    """Raised inside the middleware when a request body passes the limit."""


class Guard:
    """The security middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _hardened(send)
        headers = _headers(scope)
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        if self.token is not None and _query_token(scope) is not None:
            await self._exchange_token(scope, send)
            return
        if scope["method"] in UNSAFE:
            try:
                body = await self._read_body(headers, receive)
            except BodyTooLarge:
                limit = f"request body larger than {self.max_body} bytes"
                await _respond(send, 413, limit)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _refuse(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.token is None and _hostname(host) not in LOOPBACK_NAMES:
            return 421, f"this server answers only to loopback names, not {host!r}"
        origin = headers.get("origin")
        if scope["method"] in UNSAFE and origin is not None and urlsplit(origin).netloc != host:
            return 403, f"cross-origin request from {origin!r} refused"
        if self.token is None or _query_token(scope) is not None or scope["path"] in OPEN:
            return None
        if not self._authorized(headers):
            return 401, "missing or wrong token: send 'Authorization: Bearer <token>'"
        return None

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.token):
            return True
        cookie = _cookie(headers.get("cookie", ""), COOKIE)
        return cookie is not None and _same(unquote(cookie), self.token)

    async def _exchange_token(self, scope: Scope, send: Send) -> None:
        assert self.token is not None
        if not _same(_query_token(scope) or "", self.token):
            await _respond(send, 401, "wrong token")
            return
        rest = [
            (k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode()) if k != "token"
        ]
        location = same_site(scope["path"]) + (f"?{urlencode(rest)}" if rest else "")
        cookie = f"{COOKIE}={quote(self.token, safe='')}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_body:
                raise BodyTooLarge
            if not message.get("more_body", False):
                break
        return bytes(body)


_HARDENING = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def _hardened(send: Send) -> Send:
    """Every response: no MIME sniffing, no framing, no referrer."""

    async def hardened(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_HARDENING]}
        await send(message)

    return hardened


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header.

    Parsed by hand: :class:`http.cookies.SimpleCookie` stops at the first cookie
    it does not like (another app's ``prefs={"a":1}``), losing ours after it.
    """
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            return value.strip().strip('"')
    return None


def same_site(path: str) -> str:
    """``path`` as a redirect target that stays on this server.

    ``//evil.example/`` (or ``/\\evil.example/``) is a path to us but an
    address elsewhere to a browser, so leading slashes are collapsed to one.
    """
    return "/" + quote(path.lstrip("/\\"), safe="/:@!$&'()*+,;=~")


def _hostname(host: str) -> str:
    """The name part of a Host header (``[::1]:8765`` -> ``[::1]``)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def _query_token(scope: Scope) -> str | None:
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if key == "token":
            return str(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, status: int, message: str, **extra: Any) -> None:
    body = json.dumps({"error": message, **extra}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="outspool"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
