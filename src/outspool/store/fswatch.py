"""Waiting for a file in a directory to be written, without polling (Linux inotify).

A SQLite commit in WAL mode appends to the ``-wal`` file beside the database, so a
waiter that watches the database's directory is woken by the kernel the moment another
connection commits, where polling ``PRAGMA data_version`` every ``poll_interval`` woke
it a hundred times a second while nothing happened (docs/performance.md, *Start-up*).
Any write in the directory wakes it (a checkpoint, another database there): the caller
checks what it waits for and waits again. Where inotify is missing or refused (another
system, the per-user limit of instances reached), :func:`open_watch` gives None and the
caller polls as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
from pathlib import Path

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENTS = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _libc.inotify_init1.argtypes = (ctypes.c_int,)
    _libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
except (OSError, AttributeError):  # not Linux
    _libc = None


class DirectoryWatch:
    """An inotify instance watching one directory for written files."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> bool:
        """Until something in the directory is written, or ``timeout`` seconds; True if
        something was (every event so far is taken)."""
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return False
        self.drain()
        return True

    def drain(self) -> None:
        """Forget the events so far."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def open_watch(directory: Path) -> DirectoryWatch | None:
    """A watch of ``directory``; None where inotify cannot be had."""
    if _libc is None:
        return None
    fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    if _libc.inotify_add_watch(fd, os.fsencode(directory), _EVENTS) < 0:
        os.close(fd)
        return None
    return DirectoryWatch(fd)
