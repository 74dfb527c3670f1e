"""Showing a program's output live on outspool's own stdout and stderr (``outspool run``).

The echo is a courtesy; the store has every byte. A reader that stops reading
(``outspool run -- yes | (sleep 60; cat)``) holds the capture back, as it would
hold back the program in a shell pipeline, but the echo never blocks: what an
fd does not take yet is kept, and the capture loop waits for the fd to take
more (``wait_fd``, to poll for writing) without reading that program further,
so it can give the echo up when the program is being stopped. On a pipe or a
terminal the echo writes through a non-blocking twin of the fd (the same pipe
or terminal opened anew through ``/proc/self/fd``: the shared fd's flags,
which other processes see, are left alone); where no twin can be opened (a
socket), it writes at most ``PIPE_BUF`` bytes once ``poll`` says the fd takes
more, which never blocks, and waits on a duplicate of the fd (so two captures
echoing to one fd are told apart). A regular file (or ``/dev/null``) never
waits on a reader and takes whole writes.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
from dataclasses import dataclass

from outspool.models import Stream


@dataclass(frozen=True, slots=True)
class _Target:
    fd: int  #: what the caller gave
    write_fd: int  #: what is written to: ``fd`` or its non-blocking twin
    poll_fd: int  #: what to wait on for room: the twin, or a duplicate of ``fd``
    careful: bool  #: a reader may hold writes back
    twin: bool  #: ``write_fd`` is a non-blocking twin, owned here


class Echo:
    """The fds output is echoed to, per stream; each is dropped once it fails or is given up.

    At most one write is left unfinished at a time (:attr:`wait_fd`): the caller
    shows nothing more until :meth:`flush` has finished it or :meth:`give_up`
    dropped it.
    """

    def __init__(self, fds: dict[Stream, int]) -> None:
        targets = {fd: _target(fd) for fd in set(fds.values())}
        self._owned = [t.write_fd for t in targets.values() if t.twin]
        self._owned += [t.poll_fd for t in targets.values() if t.poll_fd != t.write_fd]
        self._targets = {stream: targets[fd] for stream, fd in fds.items()}
        self._left: tuple[Stream, _Target, memoryview] | None = None
        self.broken = False  #: a reader went away (EPIPE): the program should get SIGPIPE

    def close(self) -> None:
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()
        self._targets.clear()
        self._left = None

    @property
    def wait_fd(self) -> int | None:
        """The fd to wait on (for writing) before :meth:`flush` can go on; None: all shown."""
        return None if self._left is None else self._left[1].poll_fd

    def show(self, stream: Stream, data: bytes) -> int | None:
        """Echo ``data`` as far as the fd takes it without waiting; :attr:`wait_fd`.

        A reader that went away (EPIPE) sets :attr:`broken`, as in a shell
        pipeline; any other failure just ends this stream's echo.
        """
        assert self._left is None, "show() while an echo waits"
        target = self._targets.get(stream)
        if target is not None and data:
            self._left = (stream, target, memoryview(data))
        return self.flush()

    def flush(self) -> int | None:
        """Go on with what the fd did not take yet; :attr:`wait_fd`."""
        if self._left is None:
            return None
        stream, target, view = self._left
        try:
            view = _write(target, view)
        except BrokenPipeError:
            self._drop(stream)
            self.broken = True
            return None
        except OSError:
            self._drop(stream)  # the terminal itself is gone: keep capturing
            return None
        self._left = (stream, target, view) if view else None
        return self.wait_fd

    def give_up(self) -> None:
        """Drop the unfinished write and its stream's echo: the program is being stopped, and
        a reader that stopped reading must not hold that up (the store has every byte)."""
        if self._left is not None:
            self._drop(self._left[0])

    def _drop(self, stream: Stream) -> None:
        self._targets.pop(stream, None)
        self._left = None


def _write(target: _Target, view: memoryview) -> memoryview:
    """Write as much of ``view`` as the fd takes now; what is left."""
    while view:
        if target.careful and not target.twin:
            poller = select.poll()
            poller.register(target.fd, select.POLLOUT)
            if not poller.poll(0):
                return view
        piece = view if target.twin or not target.careful else view[: select.PIPE_BUF]
        try:
            view = view[os.write(target.write_fd, piece) :]
        except BlockingIOError:
            return view
    return view


def _target(fd: int) -> _Target:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return _Target(fd, fd, fd, careful=False, twin=False)
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        return _Target(fd, fd, fd, careful=False, twin=False)
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        twin = os.open(f"/proc/self/fd/{fd}", flags)
    except OSError:  # a socket, or no /proc
        return _Target(fd, fd, os.dup(fd), careful=True, twin=False)
    return _Target(fd, twin, twin, careful=True, twin=True)
