"""Reading a program's pipes into its sink, until it ends.

One loop per execution waits on the program's stdout and stderr (or its pty),
on its exit (a pidfd) and on a wake-up pipe for cancellation. Each read goes to
the sink whole and unchanged (bytes, never decoded), in the order the reads
happened, and optionally to an echo fd (``outspool run`` shows output live).

The program's end is decided here, not by the pipes closing: once the main
process has exited, output is drained for ``drain_grace`` seconds, then the
process group is killed so a background grandchild holding the pipe open cannot
hang the execution. A timeout or a cancellation stops the group with SIGTERM,
then SIGKILL after ``kill_grace``, while output keeps being read.

Every wait of the loop is bounded by its next deadline and ended by a stop
request: waiting for room while the store is behind (bounded pending memory, a
full disk) and waiting for outspool's own stdout to take the echo. So a timeout,
a cancel or a signal acts on the program whatever the capture is blocked on; an
echo that nobody reads is given up once the program is being stopped (the
output is stored whole all the same).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field

from outspool.echo import Echo
from outspool.masking import Masker
from outspool.models import Outcome, Status, Stream
from outspool.process import Child, is_eof_error
from outspool.writer import Sink

_SMALL_READ = 4096  # a read smaller than this means the program writes in small pieces
_COALESCE = 0.001  # seconds to wait after one, so the next read takes many lines at once


@dataclass
class StopRequest:
    """Why the capture was asked to stop the program."""

    status: Status
    reason: str
    at: float = field(default_factory=time.monotonic)


class Capture:
    """Drives one child's output into one sink. ``run()`` blocks until the program ends."""

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
    ) -> None:
        self.child = child
        self.sink = sink
        self._read_size = read_size
        self._timeout = timeout
        self._kill_grace = kill_grace
        self._drain_grace = drain_grace
        self._echo = Echo(echo or {})
        self._maskers = dict(maskers or {})
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop: StopRequest | None = None
        self._lock = threading.Lock()
        self._killed = False
        self._ended = False  # the group was killed and reaped: its ID may name another
        self._started = time.monotonic()
        self._exited_at: float | None = None  # when the main process exited
        self._stop_sent: float | None = None  # when SIGTERM went to the group

    def request_stop(self, status: Status, reason: str, force: bool = False) -> None:
        """Stop the program (SIGTERM, grace, SIGKILL); the first request names the outcome.

        ``force`` (or a second request with it) sends SIGKILL without waiting.
        """
        with self._lock:
            if self._stop is None:
                self._stop = StopRequest(status, reason)
            if force:
                self._kill_grace = 0.0
                if not self._ended:  # at once, from this thread: the capture may be blocked
                    self._killed = True
                    self.child.signal_group(signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self.sink.interrupt()  # a capture waiting for room in the store acts now

    def run(self) -> Outcome:
        """Capture until the program has ended and its output is drained; the outcome."""
        self._started = time.monotonic()
        sel = selectors.DefaultSelector()
        try:
            for fd in self.child.fds:
                sel.register(fd, selectors.EVENT_READ, "out")
            if self.child.pidfd is not None:
                sel.register(self.child.pidfd, selectors.EVENT_READ, "exit")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            self._loop(sel)
        finally:
            sel.close()
            for stream in list(self._maskers):
                self._deliver(stream, b"", 0)
            self._echo.close()
            self._end_group()
            self.child.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self._outcome()

    # --- the loop -------------------------------------------------------------------

    def _loop(self, sel: selectors.BaseSelector) -> None:
        while True:
            now = time.monotonic()
            if (
                self._exited_at is None
                and self.child.pidfd is None
                and self.child.proc.poll() is not None
            ):
                self._exited_at = now
            if self._exited_at is not None and (
                not self.child.fds or now >= self._exited_at + self._drain_grace
            ):
                return  # done; past the grace a grandchild holds the pipes: stop waiting
            self._enforce(now)
            for key, _ in sel.select(self._next_wakeup(now)):
                if key.data == "out":
                    self._read(sel, key.fd)
                elif key.data == "exit":
                    self._exited_at = time.monotonic()
                    sel.unregister(key.fd)
                else:
                    self._drain_wake()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)

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
        if self.child.pidfd is None:
            times.append(now + 0.05)  # no pidfd: look at the process now and then
        if self._exited_at is not None:
            times.append(self._exited_at + self._drain_grace)
        if (deadline := self._deadline()) is not None:
            times.append(deadline)
        return max(0.0, min(times) - now) if times else None

    def _patience(self) -> float | None:
        """How long a blocked wait (store, echo) may last before the loop must act."""
        deadline = self._deadline()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _blocked(self, began: float) -> None:
        """After a wait for the store or the echo: act on deadlines and stop requests.
        Time spent so after the program exited is not drain time (output was waiting)."""
        now = time.monotonic()
        if self._exited_at is not None:
            self._exited_at += now - began
        self._enforce(now)

    def _enforce(self, now: float) -> None:
        """Timeouts and stop requests: SIGTERM first, SIGKILL once the grace is over."""
        timeout = self._timeout
        if timeout is not None and self._stop is None and now >= self._started + timeout:
            self.request_stop(Status.TIMED_OUT, "timeout")
        if self._stop is None:
            return
        if self._stop_sent is None:
            self.child.signal_group(signal.SIGTERM)
            self._stop_sent = now
        elif now >= self._stop_sent + self._kill_grace and not self._killed:
            self._killed = True
            self.child.signal_group(signal.SIGKILL)

    def _read(self, sel: selectors.BaseSelector, fd: int) -> None:
        stream = self.child.fds[fd]
        began = time.monotonic()
        room = self.sink.reserve(self._read_size, self._patience())  # the store may be behind
        if not room:  # not before a deadline or a stop request: act on it, then come back
            self._blocked(began)
            return
        try:
            data = os.read(fd, room)
        except BlockingIOError:
            data = None
        except OSError as exc:
            if not is_eof_error(exc):
                self.sink.release(room)
                raise
            data = b""
        if not data:
            self.sink.release(room)
            if data is not None:
                self._deliver(stream, b"", 0)
                sel.unregister(fd)
                os.close(fd)
                del self.child.fds[fd]
            return
        self._deliver(stream, data, room)
        if len(data) < _SMALL_READ:
            time.sleep(_COALESCE)  # let a chatty program's lines gather: fewer, larger reads

    def _deliver(self, stream: Stream, data: bytes, room: int) -> None:
        """Echo and store a read, secrets masked; ``b""``: the stream ended."""
        masker = self._maskers.get(stream)
        if masker is not None:
            data = masker.feed(data) if data else masker.flush()
            if not data:
                self.sink.release(room)
                return
        elif not data:
            return
        self._show(stream, data)
        self.sink.write(stream, data, room)

    def _show(self, stream: Stream, data: bytes) -> None:
        if not self._echo.show(stream, data, self._writable):
            # the reader went away (`outspool run -- prog | head`): as in a shell
            # pipeline, the program gets SIGPIPE; what it printed is stored
            self.child.signal_group(signal.SIGPIPE)

    def _writable(self, fd: int) -> bool:
        """Wait until the echo's ``fd`` takes more; False once the program is being stopped
        (a reader that stopped reading must not hold up a timeout, a cancel or a signal)."""
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            began = time.monotonic()
            patience = 0.0 if self._stop is not None else self._patience()
            ready = poller.poll(None if patience is None else math.ceil(patience * 1000))
            if any(got == fd for got, _ in ready):
                return True
            if self._stop is not None:
                return False
            self._drain_wake()
            self._blocked(began)

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
