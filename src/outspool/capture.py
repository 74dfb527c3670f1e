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
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field

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
        self._echo = dict(echo or {})
        self._maskers = dict(maskers or {})
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop: StopRequest | None = None
        self._lock = threading.Lock()
        self._killed = False

    def request_stop(self, status: Status, reason: str, force: bool = False) -> None:
        """Stop the program (SIGTERM, grace, SIGKILL); the first request names the outcome.

        ``force`` (or a second request with it) sends SIGKILL without waiting.
        """
        with self._lock:
            if self._stop is None:
                self._stop = StopRequest(status, reason)
            if force:
                self._kill_grace = 0.0
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> Outcome:
        """Capture until the program has ended and its output is drained; the outcome."""
        started = time.monotonic()
        sel = selectors.DefaultSelector()
        try:
            for fd in self.child.fds:
                sel.register(fd, selectors.EVENT_READ, "out")
            if self.child.pidfd is not None:
                sel.register(self.child.pidfd, selectors.EVENT_READ, "exit")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            self._loop(sel, started)
        finally:
            sel.close()
            for stream in list(self._maskers):
                self._deliver(stream, b"", 0)
            self._end_group()
            self.child.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self._outcome()

    # --- the loop -------------------------------------------------------------------

    def _loop(self, sel: selectors.BaseSelector, started: float) -> None:
        exited_at: float | None = None
        stop_sent: float | None = None
        while True:
            now = time.monotonic()
            if (
                exited_at is None
                and self.child.pidfd is None
                and self.child.proc.poll() is not None
            ):
                exited_at = now
            if exited_at is not None and (
                not self.child.fds or now >= exited_at + self._drain_grace
            ):
                return  # done; past the grace a grandchild holds the pipes: stop waiting
            stop_sent = self._enforce(now, started, stop_sent)
            for key, _ in sel.select(self._next_wakeup(now, started, exited_at, stop_sent)):
                if key.data == "out":
                    self._read(sel, key.fd)
                elif key.data == "exit":
                    exited_at = time.monotonic()
                    sel.unregister(key.fd)
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)

    def _next_wakeup(
        self, now: float, started: float, exited_at: float | None, stop_sent: float | None
    ) -> float | None:
        times = []
        if self.child.pidfd is None:
            times.append(now + 0.05)  # no pidfd: look at the process now and then
        if exited_at is not None:
            times.append(exited_at + self._drain_grace)
        if self._timeout is not None and self._stop is None:
            times.append(started + self._timeout)
        if stop_sent is not None:
            times.append(stop_sent + self._kill_grace)
        return max(0.0, min(times) - now) if times else None

    def _enforce(self, now: float, started: float, stop_sent: float | None) -> float | None:
        """Timeouts and stop requests: SIGTERM first, SIGKILL once the grace is over."""
        if self._timeout is not None and self._stop is None and now >= started + self._timeout:
            self.request_stop(Status.TIMED_OUT, "timeout")
        if self._stop is None:
            return stop_sent
        if stop_sent is None:
            self.child.signal_group(signal.SIGTERM)
            return now
        if now >= stop_sent + self._kill_grace and not self._killed:
            self._killed = True
            self.child.signal_group(signal.SIGKILL)
        return stop_sent

    def _read(self, sel: selectors.BaseSelector, fd: int) -> None:
        stream = self.child.fds[fd]
        room = self.sink.reserve(self._read_size)  # blocks while the store is behind
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
        fd = self._echo.get(stream)
        if fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            # the reader went away (`outspool run -- prog | head`): as in a shell
            # pipeline, the program gets SIGPIPE; what it printed is stored
            del self._echo[stream]
            self.child.signal_group(signal.SIGPIPE)
        except OSError:
            del self._echo[stream]  # the terminal itself is gone: keep capturing

    # --- the end ---------------------------------------------------------------------

    def _end_group(self) -> None:
        """No process of the group (or, with a guard, of the execution) outlives it."""
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
