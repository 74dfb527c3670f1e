"""One capture loop per process: every live execution's pipes on one epoll, one thread.

A thread per execution costs a wake-up and a hand-off of the GIL for every line
a program prints; a worker running a thousand chatty programs spends its CPU on
that. Here one thread waits on one epoll holding every program's pipes and
pidfd (and, while an echo waits for its reader, the echo's fd), on a deadline
heap (timeouts, kill graces, drain graces) and on one wake-up pipe that other
threads write to: a new capture, a stop request, room freed in the store.

The loop never blocks. A capture that finds no room under ``max_pending_bytes``
stops being polled for reads until the writer frees some (it calls back), and
one whose echo is held up by a slow reader stops being polled until the echo's
fd takes more; either way its deadlines and stop requests still act. Small
reads are coalesced without sleeping per program: when a pass read only small
pieces, the loop waits a millisecond before polling again, so the next pass
takes many lines of many programs at once.

The per-execution logic (what to read, when to stop, the outcome) stays in
:class:`outspool.capture.Capture`; this module only dispatches to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from outspool.threads import PerProcess

log = logging.getLogger("outspool.loop")

COALESCE = 0.001  #: seconds between passes that read only small pieces
#: Reads up to this size keep the GIL (see :meth:`Loop.read`).
SMALL_READ = 64 << 10

_libc = ctypes.PyDLL(None, use_errno=True)  # a PyDLL's calls keep the GIL
_read = _libc.read
_read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
_read.restype = ctypes.c_ssize_t


class Client(Protocol):
    """What the loop drives: a capture, called on the loop thread only."""

    def attached(self, loop: Loop, now: float) -> None:
        """First call on the loop thread: watch your fds, schedule your deadlines."""

    def ready(self, fd: int, events: int) -> bool:
        """``fd`` is ready; True if this was a read of a few bytes (worth coalescing)."""

    def poked(self, now: float) -> None:
        """Another thread asked for attention (a stop request, room in the store)."""

    def due(self, now: float) -> None:
        """A deadline it scheduled has come."""

    def failed(self, exc: BaseException) -> None:
        """One of its calls raised: end it with ``exc``."""


class Loop:
    """The capture thread of this process (see :func:`shared`)."""

    def __init__(self, name: str = "outspool-capture") -> None:
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._fds: dict[int, Client] = {}
        self._heap: list[tuple[float, int, Client]] = []
        self._scheduled: dict[Client, float] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._added: list[Client] = []
        self._pokes: dict[Client, None] = {}  # ordered set
        self._buffer = ctypes.create_string_buffer(SMALL_READ)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- any thread ---------------------------------------------------------------------

    def add(self, client: Client) -> None:
        with self._lock:
            self._added.append(client)
        self._wake()

    def poke(self, client: Client) -> None:
        with self._lock:
            self._pokes[client] = None
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the loop has much to wake for
            os.write(self._wake_w, b"x")

    # --- the loop thread only -------------------------------------------------------------

    def read(self, fd: int, size: int) -> bytes:
        """``os.read`` of at most :data:`SMALL_READ` bytes from a non-blocking fd, keeping
        the GIL: ``os.read`` lets it go, and while other threads run Python (the writer,
        programs being started) the loop would wait up to the switch interval (5 ms) to
        get it back, once per read, so a pass over many programs took ~1 ms per line."""
        got = _read(fd, self._buffer, min(size, SMALL_READ))
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))  # BlockingIOError for EAGAIN
        return ctypes.string_at(self._buffer, got)

    def watch(self, fd: int, client: Client, events: int = select.EPOLLIN) -> None:
        self._epoll.register(fd, events)
        self._fds[fd] = client

    def unwatch(self, fd: int) -> None:
        if self._fds.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def schedule(self, client: Client, when: float | None) -> None:
        """Call ``client.due`` at ``when`` (replacing what was scheduled; None: nothing)."""
        if when is None:
            self._scheduled.pop(client, None)
        elif self._scheduled.get(client) != when:
            self._scheduled[client] = when
            heapq.heappush(self._heap, (when, next(self._seq), client))

    def forget(self, client: Client) -> None:
        """The client has ended: no more calls (its fds must be unwatched already)."""
        self._scheduled.pop(client, None)
        if len(self._heap) > 2 * len(self._scheduled) + 64:  # drop what was replaced, so an
            # ended capture is not kept until its timeout would have come
            self._heap = [e for e in self._heap if self._scheduled.get(e[2]) == e[0]]
            heapq.heapify(self._heap)

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # pragma: no cover - a bug here must not hang captures
            log.exception("the capture loop stopped")
            for client in {*self._fds.values(), *self._scheduled, *self._added}:
                with contextlib.suppress(BaseException):
                    client.failed(exc)
            raise

    def _serve(self) -> None:
        coalesce_from: float | None = None
        while True:
            if coalesce_from is not None:
                rest = coalesce_from + COALESCE - time.monotonic()
                if rest > 0:
                    time.sleep(rest)
            timeout = -1.0
            if self._heap:
                timeout = max(0.0, self._heap[0][0] - time.monotonic())
            events = self._epoll.poll(timeout)
            began = time.monotonic()
            small = False
            for fd, mask in events:
                if fd == self._wake_r:
                    self._take_wake()
                    continue
                client = self._fds.get(fd)
                if client is not None:  # else unwatched earlier in this pass
                    small = self._call(client, client.ready, fd, mask) or small
            coalesce_from = began if small else None
            self._take_requests()
            self._run_due()

    def _call(self, client: Client, method: Callable[..., object], *args: object) -> bool:
        try:
            return bool(method(*args))
        except BaseException as exc:  # one capture's failure must not stop the others
            log.debug("capture failed: %r", exc)
            try:
                client.failed(exc)
            except BaseException:  # pragma: no cover - failed() only records and unwatches
                log.exception("capture could not be ended")
            return False

    def _take_wake(self) -> None:
        """Empty the wake-up pipe; what was asked is taken after (``_take_requests``)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _take_requests(self) -> None:
        with self._lock:
            added, self._added = self._added, []
            pokes = list(self._pokes)
            self._pokes.clear()
        now = time.monotonic()
        for client in added:
            self._call(client, client.attached, self, now)
        for client in pokes:
            self._call(client, client.poked, now)

    def _run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:  # (forget() may replace the list)
            when, _, client = heapq.heappop(self._heap)
            if self._scheduled.get(client) != when:
                continue  # replaced or forgotten
            del self._scheduled[client]
            self._call(client, client.due, now)


_shared = PerProcess(Loop)


def shared() -> Loop:
    """This process's capture loop, started on first use (and anew in a forked child)."""
    return _shared.get()
