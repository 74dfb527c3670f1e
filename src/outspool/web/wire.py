"""The connection under a streamed response, for writing prepared bytes with the least Python.

An ASGI app gets only ``send``: each body message then goes through Starlette's
middleware, :mod:`outspool.web.security`'s wrapper, uvicorn's cycle and h11, which frames
it, before the socket write. For one event sent to 500 followers of an execution that
was most of the server's CPU besides the writes themselves. Our HTTP protocol
(:class:`outspool.web.limits.BoundedH11`) puts a :class:`Wire` in each request's scope
(``scope["extensions"]["outspool.wire"]["wire"]``); once the response has started through
``send`` (status and headers as ever), the event stream writes body bytes to the wire,
framed as h11 frames a body without a ``Content-Length``: in chunks for an HTTP/1.1
client, bare for an HTTP/1.0 one (whose connection closes at the end). The response still ends
through ``send``, so h11 writes the last chunk and closes as usual. Without the
extension (another server) a stream just uses ``send``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

EXTENSION = "outspool.wire"


def frame(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (RFC 9112, 7.1), as h11 writes it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Wire:
    """Body bytes straight to the transport of one request's connection (uvicorn's h11
    cycle), once its response has started."""

    __slots__ = ("_cycle", "_transport", "chunked")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._transport = cycle.transport
        # h11 frames a body of unknown length in chunks for an HTTP/1.1 client, and by
        # closing the connection for an HTTP/1.0 one
        self.chunked: bool = cycle.conn.their_http_version == b"1.1"

    @property
    def open(self) -> bool:
        """Whether body bytes may be written now: the response started through ``send``,
        has not ended, and the client is still there."""
        cycle = self._cycle
        return (
            cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and not self._transport.is_closing()
        )

    def buffered(self) -> int:
        """Bytes written that the socket has not taken yet (the client is behind)."""
        size: int = self._transport.get_write_buffer_size()
        return size

    def write(self, data: bytes, framed: bytes) -> None:
        """Write ``data``: ``framed`` is ``frame(data)``, made once for all chunked wires."""
        self._transport.write(framed if self.chunked else data)


#: What a wire reads of uvicorn's h11 cycle (not a public API: a uvicorn without them
#: gives no wire, and every stream sends through ASGI).
_CYCLE = ("scope", "transport", "conn", "response_started", "response_complete", "disconnected")


def attach(cycle: Any) -> None:
    """Give the request of uvicorn's ``cycle`` its wire (before the app sees the scope)."""
    if not all(hasattr(cycle, name) for name in _CYCLE):
        return
    if cycle.scope.get("method") == "GET" and hasattr(cycle.conn, "their_http_version"):
        cycle.scope.setdefault("extensions", {})[EXTENSION] = {"wire": Wire(cycle)}


def wire_of(scope: Scope) -> Wire | None:
    found = scope.get("extensions", {}).get(EXTENSION)
    return None if found is None else found.get("wire")
