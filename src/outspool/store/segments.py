"""Large chunk blobs of the SQLite backend, kept beside the database file.

SQLite in WAL mode writes every page twice (into the WAL, then into the
database at checkpoint). For bulk output that doubles the bytes written and
costs more than the capture itself, so a chunk whose encoded blobs reach
``THRESHOLD`` bytes is appended to a per-execution segment file in
``<database>-chunks/`` and its row keeps only where the bytes are and their
CRC-32. Small chunks (a trickle, a short job) stay inline in their rows.

Durability: the bytes are written before the row that points at them is
committed. While an execution runs its segment is as durable as any file
written without fsync (``cat > file``); when it ends, the file is fsynced by
the checkpointer thread, off the writer's path. Meanwhile, every ``WRITEBACK_STEP``
bytes a file gains, that thread asks the kernel to start writing them out
(``sync_file_range``, which does not wait), so that the fsync at the end finds
little left to write instead of the whole output. A reader verifies the CRC, so
bytes lost to a power failure are reported as a damaged chunk, never returned
wrong. A retried batch appends again and points at the new copy; the old one
is never referenced. Fsyncing segments while they grow was measured to cost
more than the whole capture (docs/performance.md).

A *trimmable* chunk (the sliding tail of a stream past its output limit,
:mod:`outspool.window`) gets a file of its own, ``<id>.<chunk>-<offsets>.seg``,
so that deleting the chunk as the window slides gives its bytes back at once.
Deleting an execution removes all its files (:meth:`Segments.remove_all`). Files
are removed after the commit that drops their rows; a process killed in between
leaves them behind, and the store's next ``reclaim`` sweeps them
(:meth:`Segments.listing`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outspool import checksum
from outspool.errors import DamagedError, StoreError

#: Chunks whose encoded blobs reach this many bytes go to segment files.
THRESHOLD = 64 * 1024
#: Bytes a growing segment file gains before the kernel is asked to start writing them.
WRITEBACK_STEP = 8 * 1024 * 1024
#: ``<id>.seg`` and a trimmable chunk's ``<id>.<chunk>-<stdout offset>-<stderr offset>.seg``.
_NAME = re.compile(r"(?P<id>[^/]+?)(?:\.\d+-\d+-\d+)?\.seg")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a chunk's blobs were written: offset, the two lengths, and their CRC-32."""

    offset: int
    stdout_length: int
    stderr_length: int
    crc: int


class Segments:
    """Append-only segment files, one per execution, for one database."""

    def __init__(self, database: Path) -> None:
        self.folder = database.with_name(database.name + "-chunks")
        self._files: dict[str, int] = {}  # execution id -> fd open for appending
        self._sizes: dict[str, int] = {}  # execution id -> bytes its file holds
        self._written: dict[str, int] = {}  # execution id -> bytes handed to writeback
        self._ended: set[Path] = set()  # files of ended executions, not yet fsynced
        self._own: dict[str, set[Path]] = {}  # trimmable chunks' files, per execution
        self._lock = threading.Lock()

    def path(self, execution_id: str) -> Path:
        if not execution_id or "/" in execution_id or execution_id.startswith("."):
            raise StoreError(f"execution ID {execution_id!r} cannot name a segment file")
        return self.folder / f"{execution_id}.seg"

    def append(
        self, execution_id: str, stdout: bytes, stderr: bytes, crc: int | None = None
    ) -> Placement:
        """Write both blobs at the end of the execution's segment file (``crc``: theirs,
        if known)."""
        try:
            with self._lock:
                fd = self._files.get(execution_id)
                if fd is None:
                    self.folder.mkdir(exist_ok=True)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                    fd = self._files[execution_id] = os.open(self.path(execution_id), flags, 0o644)
                offset = os.fstat(fd).st_size
                _write_all(fd, stdout + stderr if stderr else stdout)
                self._sizes[execution_id] = offset + len(stdout) + len(stderr)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.folder}: {exc.strerror or exc}") from None
        return Placement(offset, len(stdout), len(stderr), _crc(stdout, stderr, crc))

    def write_own(
        self, execution_id: str, tag: str, stdout: bytes, stderr: bytes, crc: int | None = None
    ) -> tuple[str, Placement]:
        """Write one trimmable chunk's blobs to a file of their own: its name, and where."""
        path = self.path(execution_id).with_suffix(f".{tag}.seg")
        try:
            self.folder.mkdir(exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = os.open(path, flags, 0o644)
            try:
                _write_all(fd, stdout + stderr if stderr else stdout)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.folder}: {exc.strerror or exc}") from None
        with self._lock:
            self._own.setdefault(execution_id, set()).add(path)
        return path.name, Placement(0, len(stdout), len(stderr), _crc(stdout, stderr, crc))

    def remove(self, execution_id: str, names: list[str]) -> None:
        """Delete files of trimmed chunks (after the rows are gone)."""
        own = self._own.get(execution_id, set())
        for name in names:
            path = self.folder / name
            if "/" in name or not name.startswith(self.path(execution_id).stem + "."):
                continue  # not a name we wrote: never unlink what a row merely says
            own.discard(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def listing(self) -> dict[str, list[str]]:
        """The files in the folder, by execution ID: its segment and its trimmable chunks'."""
        found: dict[str, list[str]] = {}
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return found
        for name in names:
            match = _NAME.fullmatch(name)
            if match is not None:
                found.setdefault(match["id"], []).append(name)
        return found

    def remove_all(self, execution_id: str, names: list[str]) -> None:
        """Delete an execution's files: its segment and its trimmable chunks' ``names``."""
        main = self.path(execution_id)
        with self._lock:
            fd = self._files.pop(execution_id, None)
            self._own.pop(execution_id, None)
            self._ended.discard(main)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            main.unlink()
        self.remove(execution_id, names)

    def read(
        self, execution_id: str, chunk: int, where: Placement, name: str | None = None
    ) -> tuple[bytes, bytes] | None:
        """Both blobs of chunk ``chunk`` (in ``name`` if it has its own file), CRC-checked.

        None when the chunk had a file of its own and it is gone: the chunk was
        trimmed (a tail window slid) after its row was read.
        """
        total = where.stdout_length + where.stderr_length
        path = self.path(execution_id) if name is None else self.folder / name
        damaged = f"chunk {chunk} of {execution_id} is damaged: its bytes in {self.folder}"
        try:
            if "/" in path.name:
                raise FileNotFoundError(path.name)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if min(where.offset, where.stdout_length, where.stderr_length) < 0 or (
                    where.offset + total > os.fstat(fd).st_size
                ):
                    raise DamagedError(f"{damaged} are cut short or misplaced")
                data = os.pread(fd, total, where.offset)
            finally:
                os.close(fd)
        except FileNotFoundError:
            if name is not None:
                return None
            raise DamagedError(f"{damaged} are missing") from None
        except OSError as exc:
            raise StoreError(
                f"cannot read the output of {execution_id} in {self.folder}: {exc.strerror or exc}"
            ) from None
        if len(data) != total or checksum.crc32(data) != where.crc:
            raise DamagedError(f"{damaged} fail their checksum")
        return data[: where.stdout_length], data[where.stdout_length :]

    def sync(self) -> None:
        """fsync the files of executions that ended since the last call, and start writing
        out what growing ones gained (the checkpointer)."""
        with self._lock:
            ended, self._ended = self._ended, set()
            growing = self._growing()
        for fd, start, length in growing:
            try:
                _start_writeback(fd, start, length)
            finally:
                os.close(fd)
        for path in ended:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def _growing(self) -> list[tuple[int, int, int]]:
        """Under the lock: ``(fd, offset, length)`` of the bytes each open file gained since
        its last writeback, once they reach ``WRITEBACK_STEP`` (``fd`` is a duplicate the
        caller closes: :meth:`release` may close the original meanwhile)."""
        found: list[tuple[int, int, int]] = []
        for execution_id, fd in self._files.items():
            size, done = self._sizes.get(execution_id, 0), self._written.get(execution_id, 0)
            if size - done >= WRITEBACK_STEP:
                with contextlib.suppress(OSError):
                    found.append((os.dup(fd), done, size - done))
                    self._written[execution_id] = size
        return found

    def release(self, execution_id: str) -> None:
        """The execution has ended: close its file; the next :meth:`sync` makes it durable."""
        with self._lock:
            self._sizes.pop(execution_id, None)
            self._written.pop(execution_id, None)
            fd = self._files.pop(execution_id, None)
            if fd is not None:
                self._ended.add(self.path(execution_id))
            self._ended.update(self._own.pop(execution_id, set()))
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for execution_id in list(self._files):
            self.release(execution_id)
        self.sync()


def _crc(stdout: bytes, stderr: bytes, known: int | None) -> int:
    """The CRC-32 of both blobs (outspool.checksum.blobs), unless the encoder knew it."""
    return checksum.blobs(stdout, stderr) if known is None else known


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range of ``fd`` out, without waiting (Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``); elsewhere, or if it fails, nothing:
    the fsync at the end writes what is left either way."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; an error changes nothing


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        import ctypes

        found = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    found.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    found.restype = ctypes.c_int
    call: Callable[[int, int, int, int], int] = found
    return call


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
