"""Reading a program's pipes into its sink, until it ends.

Every execution of a process is read by one thread, :mod:`outspool.loop`: one
epoll over every program's stdout and stderr (or its pty) and its exit (a
pidfd). A :class:`Capture` is one execution's part of it: its reads, its
deadlines, its stop. Each read goes to the sink whole and unchanged (bytes,
never decoded), in the order the reads happened, and optionally to an echo fd
(``outspool run`` shows output live). :meth:`Capture.start` hands the capture to
the loop and returns; the loop calls back once the program has ended, and
:meth:`Capture.complete` (on any thread but the loop's: it may wait) reaps it and
gives the outcome. No thread waits per program.

The program's end is decided here, not by the pipes closing: once the main
process has exited, output is drained for ``drain_grace`` seconds, then the
process group is killed so a background grandchild holding the pipe open cannot
hang the execution. A timeout or a cancellation stops the group with SIGTERM,
then SIGKILL after ``kill_grace``, while output keeps being read.

Nothing here waits: with no room in the store (bounded pending memory, a full
disk) the execution's pipes are not polled until the writer frees some, and an
echo its reader does not take is kept while the pipes are not polled until the
echo's fd takes more. Its deadlines and stop requests act meanwhile, so a
timeout, a cancel or a signal acts on the program whatever the capture is held
up by; an echo that nobody reads is given up once the program is being stopped
(the output is stored whole all the same). Time held up so after the program
exited is not drain time (output was waiting).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outspool import loop as _loop
from outspool.echo import Echo
from outspool.masking import Masker
from outspool.models import Outcome, Status, Stream
from outspool.process import Child, is_eof_error
from outspool.writer import Sink

_SMALL_READ = 4096  # a read smaller than this means the program writes in small pieces
_NO_PIDFD_POLL = 0.05  # without a pidfd, look at the process this often


def _queued(fd: int) -> int:
    """Bytes waiting to be read from pipe or terminal ``fd`` (0 if it cannot say)."""
    queued = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, queued)
    except OSError:
        return 0
    return int.from_bytes(queued, sys.byteorder)


def _nothing() -> None:
    """What a capture not started yet would call when done."""


@dataclass
class StopRequest:
    """Why the capture was asked to stop the program."""

    status: Status
    reason: str
    at: float = field(default_factory=time.monotonic)


class Capture:
    """Drives one child's output into one sink: :meth:`start`, then, once told that the
    program ended, :meth:`complete`.

    The methods after ``complete`` are called on the loop's thread only.
    """

    def __init__(
        self,
        child: Child,
        sink: Sink,
        *,
        read_size: int = 1 << 20,
        timeout: float | None = None,
        kill_grace: float = 5.0,
        drain_grace: float = 2.0,
        echo: dict[Stream, int] | None = None,
        maskers: dict[Stream, Masker] | None = None,
        loop: _loop.Loop | None = None,
    ) -> None:
        self.child = child
        self.sink = sink
        self._read_size = read_size
        self._timeout = timeout
        self._kill_grace = kill_grace
        self._drain_grace = drain_grace
        self._echo = Echo(echo or {})
        self._maskers = dict(maskers or {})
        self._loop = loop or _loop.shared()
        self._stop: StopRequest | None = None
        self._lock = threading.Lock()
        self._killed = False
        self._ended = False  # the group was killed and reaped: its ID may name another
        self._started = time.monotonic()
        self._exited_at: float | None = None  # when the main process exited
        self._stop_sent: float | None = None  # when SIGTERM went to the group
        self._on_done: Callable[[], None] = _nothing
        self._error: BaseException | None = None
        # loop thread only
        self._attached = False
        self._finished = False
        self._held: str | None = None  # "room" (store full) or "echo": pipes not polled
        self._held_since = 0.0
        self._echo_fd: int | None = None  # watched for writing while the echo waits
        self._bulk: set[int] = set()  # fds read with os.read (their last read was big)

    def request_stop(self, status: Status, reason: str, force: bool = False) -> None:
        """Stop the program (SIGTERM, grace, SIGKILL); the first request names the outcome.

        ``force`` (or a second request with it) sends SIGKILL without waiting.
        """
        with self._lock:
            if self._stop is None:
                self._stop = StopRequest(status, reason)
            if force:
                self._kill_grace = 0.0
                if not self._ended:  # at once, from this thread
                    self._killed = True
                    self.child.signal_group(signal.SIGKILL)
        self._loop.poke(self)

    def start(self, on_done: Callable[[], None]) -> None:
        """Hand the capture to the loop. ``on_done`` is called, on the loop's thread (so it
        must not wait), once the program has ended and its output is drained."""
        self._started = time.monotonic()
        self._on_done = on_done
        self._loop.add(self)

    def complete(self) -> Outcome:
        """After the loop said the capture is done: reap the program; its outcome (or the
        error the capture failed with). Not on the loop's thread: this may wait."""
        try:
            if self._error is not None:
                raise self._error
        finally:
            for stream in list(self._maskers):
                self._deliver_last(stream)
            self._echo.close()
            self._end_group()
            self.child.close()
        return self._outcome()

    def _deliver_last(self, stream: Stream) -> None:
        """What a masker still holds at the end (on the calling thread: it may wait)."""
        data = self._maskers[stream].flush()
        if not data:
            return
        self.sink.write(stream, data)
        wait = self._echo.show(stream, data)
        while wait is not None and self._stop is None:  # looking at stop requests meanwhile
            poller = select.poll()
            poller.register(wait, select.POLLOUT)
            poller.poll(100)
            wait = self._echo.flush()
        self._echo.give_up()
        if self._echo.broken:
            self.child.signal_group(signal.SIGPIPE)

    # --- on the loop thread ----------------------------------------------------------

    def attached(self, loop: _loop.Loop, now: float) -> None:
        self._attached = True
        for fd in self.child.fds:
            loop.watch(fd, self)
        if self.child.pidfd is not None:
            loop.watch(self.child.pidfd, self)
        self._check(now)

    def ready(self, fd: int, events: int) -> bool:
        if self._finished:
            return False
        if fd in self.child.fds:
            return self._read(fd)
        now = time.monotonic()
        if fd == self.child.pidfd:
            self._loop.unwatch(fd)
            self._exited_at = now
        elif fd == self._echo_fd:
            self._echoed(self._echo.flush(), now)
        self._check(now)
        return False

    def poked(self, now: float) -> None:
        if self._finished or not self._attached:
            return
        if self._held == "room":
            self._release(now)  # room was freed (or not: the next read asks again)
        self._check(now)

    def due(self, now: float) -> None:
        if not self._finished:
            self._check(now)

    def failed(self, exc: BaseException) -> None:
        self._error = exc
        self._echo.give_up()
        self._finish()

    def _room(self) -> None:
        """From the writer thread: room was freed in the store."""
        self._loop.poke(self)

    def _check(self, now: float) -> None:
        """Has the program ended? Deadlines, stop requests; then when to look again."""
        child = self.child
        if self._exited_at is None and child.pidfd is None and child.proc.poll() is not None:
            self._exited_at = now
        if (
            self._exited_at is not None
            and self._held is None
            and (not self.child.fds or now >= self._exited_at + self._drain_grace)
            and self._read_what_is_left()
        ):
            self._finish()  # done; past the grace a grandchild holds the pipes: stop waiting
            return
        self._enforce(now)
        if self._stop is not None and self._held == "echo":
            self._echo.give_up()
            self._echoed(None, now)
            self._check(now)  # reading again: perhaps already done
            return
        self._loop.schedule(self, self._next_wakeup(now))

    def _read_what_is_left(self) -> bool:
        """Past the grace: read what the pipes hold at this moment, which the program wrote
        before it exited but a busy loop has not read yet (the grace bounds how long a
        grandchild may hold the pipes, not how long the loop may take). Bounded: only the
        bytes queued now, not what a grandchild adds meanwhile. False if the store or the
        echo holds the capture up first (it ends once they let go and this has run)."""
        for fd in list(self.child.fds):
            stream = self.child.fds[fd]
            left = _queued(fd)
            while left > 0:
                room = self.sink.try_reserve(min(left, self._read_size), self._room)
                if not room:
                    self._hold("room", time.monotonic())
                    return False
                try:
                    data = os.read(fd, room)
                except OSError:  # EAGAIN (taken meanwhile), or EIO: nothing more here
                    data = b""
                if not data:
                    self.sink.release(room)
                    break
                left -= len(data)
                self._deliver(stream, data, room)
                if self._held is not None:  # the echo's reader is behind
                    return False
        return True

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        loop = self._loop
        for fd in self.child.fds:
            loop.unwatch(fd)
        if self.child.pidfd is not None:
            loop.unwatch(self.child.pidfd)
        if self._echo_fd is not None:
            loop.unwatch(self._echo_fd)
        loop.forget(self)
        self._on_done()

    def _hold(self, why: str, now: float) -> None:
        """Stop polling the pipes: no room in the store, or the echo waits."""
        self._held = why
        self._held_since = now
        for fd in self.child.fds:  # unwatched (a hang-up would be reported all the same)
            self._loop.unwatch(fd)

    def _release(self, now: float) -> None:
        if self._held is None:
            return
        if self._exited_at is not None:
            self._exited_at += now - self._held_since
        self._held = None
        for fd in self.child.fds:
            self._loop.watch(fd, self)

    def _deadline(self) -> float | None:
        """When the loop must act next whatever it waits for: the timeout, the kill."""
        times = []
        if self._timeout is not None and self._stop is None:
            times.append(self._started + self._timeout)
        if self._stop_sent is not None and not self._killed:
            times.append(self._stop_sent + self._kill_grace)
        return min(times) if times else None

    def _next_wakeup(self, now: float) -> float | None:
        times = []
        if self.child.pidfd is None and self._exited_at is None:
            times.append(now + _NO_PIDFD_POLL)
        if self._exited_at is not None and self._held is None:
            times.append(self._exited_at + self._drain_grace)
        if (deadline := self._deadline()) is not None:
            times.append(deadline)
        return min(times) if times else None

    def _enforce(self, now: float) -> None:
        """Timeouts and stop requests: SIGTERM first, SIGKILL once the grace is over."""
        timeout = self._timeout
        if timeout is not None and self._stop is None and now >= self._started + timeout:
            with self._lock:
                if self._stop is None:
                    self._stop = StopRequest(Status.TIMED_OUT, "timeout")
        if self._stop is None:
            return
        if self._stop_sent is None:
            self.child.signal_group(signal.SIGTERM)
            self._stop_sent = now
        elif now >= self._stop_sent + self._kill_grace and not self._killed:
            self._killed = True
            self.child.signal_group(signal.SIGKILL)

    def _read(self, fd: int) -> bool:
        """Read what ``fd`` has into the sink; True if it was a small read."""
        stream = self.child.fds[fd]
        room = self.sink.try_reserve(self._read_size, self._room)  # the store may be behind
        if not room:  # stop polling until the writer frees room; deadlines still act
            now = time.monotonic()
            self._hold("room", now)
            self._check(now)
            return False
        try:
            # a full read last time: more is likely waiting, read it all (the GIL let go)
            data = os.read(fd, room) if fd in self._bulk else self._loop.read(fd, room)
        except (BlockingIOError, InterruptedError):
            self.sink.release(room)
            return False
        except OSError as exc:
            if not is_eof_error(exc):
                self.sink.release(room)
                raise
            data = b""
        if not data:  # the end of this stream
            self._loop.unwatch(fd)
            os.close(fd)
            del self.child.fds[fd]
            self._deliver(stream, b"", room)
            self._check(time.monotonic())
            return False
        if len(data) >= _loop.SMALL_READ:
            self._bulk.add(fd)
        else:
            self._bulk.discard(fd)
        self._deliver(stream, data, room)
        return len(data) < _SMALL_READ  # a chatty program: let its lines gather

    def _deliver(self, stream: Stream, data: bytes, room: int) -> None:
        """Store and echo a read, secrets masked; ``b""``: the stream ended."""
        masker = self._maskers.get(stream)
        if masker is not None:
            data = masker.feed(data) if data else masker.flush()
        if not data:
            self.sink.release(room)
            return
        self.sink.write(stream, data, room)
        wait = self._echo.show(stream, data)
        if wait is not None or self._echo.broken:
            self._echoed(wait, time.monotonic())

    def _echoed(self, wait: int | None, now: float) -> None:
        """After an echo write: wait for its fd (not reading meanwhile), or go on."""
        if self._echo.broken:
            # the reader went away (`outspool run -- prog | head`): as in a shell
            # pipeline, the program gets SIGPIPE; what it printed is stored
            self._echo.broken = False
            self.child.signal_group(signal.SIGPIPE)
        if wait is not None and self._stop is not None:
            self._echo.give_up()  # a reader that stopped reading must not hold up a stop
            wait = None
        if wait is None:
            if self._echo_fd is not None:
                self._loop.unwatch(self._echo_fd)
                self._echo_fd = None
            self._release(now)
            return
        if self._echo_fd is None:
            self._echo_fd = wait
            self._loop.watch(wait, self, select.EPOLLOUT)
            self._hold("echo", now)

    # --- the end ---------------------------------------------------------------------

    def _end_group(self) -> None:
        """No process of the group (or, with a guard, of the execution) outlives it."""
        with self._lock:
            self._ended = True
        self.child.signal_group(signal.SIGKILL)
        proc = self.child.proc
        if proc.returncode is None:
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                proc.wait()
            else:
                if self.child.guard is not None:
                    self.child.guard.cpu_seconds = usage.ru_utime + usage.ru_stime
        if self.child.guard is not None:
            self.child.guard.end()

    def _outcome(self) -> Outcome:
        code = self.child.proc.returncode
        stop = self._stop
        sig = -code if code is not None and code < 0 else None
        exit_code = None if sig is not None else code
        guard = self.child.guard
        limit = guard.stopped_by(code) if guard is not None else None
        if stop is not None:
            cancelled = stop.status is Status.CANCELLED
            return Outcome(
                stop.status, exit_code, sig, stop.reason if cancelled else limit or stop.reason
            )
        if limit is not None:
            return Outcome(Status.FAILED, exit_code, sig, limit)
        if code == 0:
            return Outcome(Status.SUCCEEDED, 0, None, None)
        if sig is not None:
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            return Outcome(Status.FAILED, None, sig, f"killed by {name}")
        return Outcome(Status.FAILED, exit_code, None, f"exited with code {exit_code}")
