"""Showing a program's output live on outspool's own stdout and stderr (``outspool run``).

The echo is a courtesy; the store has every byte. A reader that stops reading
(``outspool run -- yes | (sleep 60; cat)``) holds the capture back, as it would
hold back the program in a shell pipeline, but only through waits the capture
controls, so it can give the echo up when the program is being stopped. On a
pipe or a terminal the echo writes through a non-blocking twin of the fd (the
same pipe or terminal opened anew through ``/proc/self/fd``: the shared fd's
flags, which other processes see, are left alone) and waits with ``poll`` when
it is full; where no twin can be opened (a socket), it writes at most
``PIPE_BUF`` bytes once ``poll`` says the fd takes more, which never blocks. A
regular file (or ``/dev/null``) never waits on a reader and takes whole writes.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
from collections.abc import Callable
from dataclasses import dataclass

from outspool.models import Stream

#: What a capture gives :meth:`Echo.show` to wait for an fd: False to give up echoing.
Writable = Callable[[int], bool]


@dataclass(frozen=True, slots=True)
class _Target:
    fd: int  #: what the caller gave (polled for room)
    write_fd: int  #: what is written to: ``fd`` or its non-blocking twin
    careful: bool  #: a reader may hold writes back
    twin: bool  #: ``write_fd`` is a non-blocking twin, owned here


class Echo:
    """The fds output is echoed to, per stream; each is dropped once it fails or is given up."""

    def __init__(self, fds: dict[Stream, int]) -> None:
        targets = {fd: _target(fd) for fd in set(fds.values())}
        self._owned = [t.write_fd for t in targets.values() if t.twin]
        self._targets = {stream: targets[fd] for stream, fd in fds.items()}

    def close(self) -> None:
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()
        self._targets.clear()

    def show(self, stream: Stream, data: bytes, writable: Writable) -> bool:
        """Echo ``data``; False when the reader went away (EPIPE): the program should get
        SIGPIPE, as in a shell pipeline. Any other failure just ends this stream's echo."""
        target = self._targets.get(stream)
        if target is None:
            return True
        try:
            if not _write(target, memoryview(data), writable):
                del self._targets[stream]  # given up: nobody reads it while the program stops
        except BrokenPipeError:
            del self._targets[stream]
            return False
        except OSError:
            del self._targets[stream]  # the terminal itself is gone: keep capturing
        return True


def _write(target: _Target, view: memoryview, writable: Writable) -> bool:
    """Write all of ``view``, waiting through ``writable``; False if it gave up."""
    while view:
        if target.careful and not target.twin and not writable(target.fd):
            return False
        piece = view if target.twin or not target.careful else view[: select.PIPE_BUF]
        try:
            view = view[os.write(target.write_fd, piece) :]
        except BlockingIOError:
            if not writable(target.fd):
                return False
    return True


def _target(fd: int) -> _Target:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return _Target(fd, fd, careful=False, twin=False)
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        return _Target(fd, fd, careful=False, twin=False)
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        twin = os.open(f"/proc/self/fd/{fd}", flags)
    except OSError:  # a socket, or no /proc
        return _Target(fd, fd, careful=True, twin=False)
    return _Target(fd, twin, careful=True, twin=True)
