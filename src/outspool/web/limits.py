"""What a few clients cannot take from the server: time, connections, file descriptors, logs.

uvicorn's HTTP/1.1 protocol waits forever for a request that never finishes
arriving (its keep-alive timer is cancelled by the first byte), and accepts
connections until the process runs out of file descriptors, at which point
nothing is answered and asyncio logs a traceback per failed accept. Here:

* each request must arrive whole (headers and body) within ``request_timeout``
  seconds of the connection opening or of the previous response ending, else
  it is answered 408 and the connection closed; a response being streamed
  (``/raw``, ``/events``) is not limited;
* beyond ``max_connections`` open connections (and never more than the file
  descriptor limit allows, with room to spare for a burst of accepts) a new
  connection is answered 503 at once and closed;
* the file descriptor soft limit is raised to the hard limit at start, and
  "Too many open files" is logged once in a while, without a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from outspool.web import wire

#: File descriptors kept for the store, threads and the listening socket.
FD_RESERVE = 32
#: Connections accepted per event-loop turn. asyncio accepts up to this many in a
#: row before any protocol can refuse one, and on EMFILE it logs a traceback and
#: schedules a retry for each remaining one (uvicorn's default is 2048).
ACCEPT_BATCH = 16


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


BUSY = _response(503, "Service Unavailable", "too many connections; try again shortly")
TOO_SLOW = _response(408, "Request Timeout", "the request did not arrive in time")


class BoundedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a request deadline and a connection cap."""

    request_timeout = 10.0
    max_connections = 1000

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:  # a request came in
            wire.attach(self.cycle)  # its task starts on the loop's next turn, after this

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._arriving():
            self._disarm()  # the request is in: answering it takes as long as it takes

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._arriving() and not self.transport.is_closing():
            self._arm()

    def _arriving(self) -> bool:
        """Whether we are waiting for (the rest of) a request."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            assert self._deadline is not None
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._arriving():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(TOO_SLOW)
        self.transport.close()


def protocol(request_timeout: float, max_connections: int) -> type[BoundedH11]:
    """The protocol class uvicorn should use, with these limits."""
    cap = min(max_connections, connection_room())
    attrs = {"request_timeout": request_timeout, "max_connections": cap}
    return type("Bounded", (BoundedH11,), attrs)


def connection_room() -> int:
    """Raise the descriptor soft limit to the hard one; how many connections then fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, soft - FD_RESERVE - 4 * ACCEPT_BATCH)


class OutOfDescriptors(logging.Filter):
    """Turns asyncio's traceback per failed ``accept()`` into one line a minute."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self._every = every
        self._last = -every

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError) or exc.errno not in (errno.EMFILE, errno.ENFILE):
            return True
        now = time.monotonic()
        if now - self._last < self._every:
            return False
        self._last = now
        record.exc_info = None
        record.msg = "out of file descriptors (%s): new connections wait"
        record.args = (exc.strerror,)
        return True


def quiet_descriptor_errors() -> Any:
    """Install :class:`OutOfDescriptors` on asyncio's logger (once)."""
    logger = logging.getLogger("asyncio")
    for existing in logger.filters:
        if isinstance(existing, OutOfDescriptors):
            return existing
    added = OutOfDescriptors()
    logger.addFilter(added)
    return added
