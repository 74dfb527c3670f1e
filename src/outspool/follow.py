"""Reading stored output: byte ranges, the tail, and following a running execution.

Every reader works from chunk rows, so it reads only what it returns: a range
starts at the chunk holding its first byte, a tail walks back from the last
chunk, and a follower asks for chunks after the last one it saw. Stream
``None`` means both streams in arrival order (``all``).

Offsets are the program's own. When a stream passed its output limit
(:mod:`outspool.window`), the bytes between its head and its tail are not
stored: readers see the jump in the chunks' offsets and say so, as a
:class:`Gap` (or ``Range.dropped``), never as wrong bytes. A jump is such a gap
only as far as the store records that many bytes dropped from that stream (the
count is written in the transaction that deletes tail chunks): any other jump is
missing chunk rows, and every reader raises DamagedError (:func:`joined`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from outspool.codec import ChunkRecord, decode
from outspool.errors import DamagedError
from outspool.heartbeat import end_lost
from outspool.models import Chunk, Execution, Stream
from outspool.store.base import Store

_BATCH = 64  # chunks fetched per query, at most
BATCH_BYTES = 1 << 20  # ... and about this many bytes of output, so a stalled reader holds little
#: A follower holds back output past a gap until no new gap came for this long (seconds),
#: and at most this many bytes of it (see Follower).
HOLD_SECONDS = 1.0
HOLD_BYTES = 8 << 20
T = TypeVar("T")


class Batches:
    """How many chunks the next query asks for: many small ones, or a few large ones.

    A reader whose client stops reading holds its last batch; counting chunks
    alone let that be 64 chunks of 1 MiB per stalled HTTP client. The size
    starts at one, at most doubles per query while chunks are small, and drops
    at once when they are large.
    """

    def __init__(self, most: int = _BATCH) -> None:
        self.most = most
        self.size = 1

    def fetched(self, records: list[ChunkRecord]) -> None:
        if not records:
            return
        total = sum(r.stdout_size + r.stderr_size for r in records)
        fit = len(records) * BATCH_BYTES // max(total, 1)
        self.size = max(1, min(self.most, 2 * len(records), fit))


@dataclass(frozen=True, slots=True)
class Range:
    """A piece of a stream and where the next read should start."""

    data: bytes
    offset: int
    next_offset: int
    eof: bool  # True when fewer than ``limit`` bytes were stored past ``offset``
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """Bytes of a stream that were not kept: ``[offset, offset + size)`` in its numbering."""

    stream: Stream
    offset: int
    size: int


class Cursor:
    """Where each stream stands while reading chunks in order: finds the gaps."""

    def __init__(self, stream: Stream | None, stdout: int = 0, stderr: int = 0) -> None:
        self.stream = stream
        self.pos = {Stream.STDOUT: stdout, Stream.STDERR: stderr}

    def gaps(self, chunk: Chunk) -> list[Gap]:
        """The gaps just before ``chunk`` in the streams read; advances past it."""
        found: list[Gap] = []
        for s, start, data in _spans(chunk, self.stream):
            if start > self.pos[s]:
                found.append(Gap(s, self.pos[s], start - self.pos[s]))
            self.pos[s] = max(self.pos[s], start + len(data))
        return found


def _spans(chunk: Chunk, stream: Stream | None) -> list[tuple[Stream, int, bytes]]:
    """The streams ``chunk`` holds bytes of (among those read), with where they start."""
    return [
        (s, start, data)
        for s, start, data in (
            (Stream.STDOUT, chunk.stdout_offset, chunk.stdout),
            (Stream.STDERR, chunk.stderr_offset, chunk.stderr),
        )
        if data and stream in (None, s)
    ]


def chunk_start(chunk: Chunk, stream: Stream | None) -> int:
    """Where ``chunk``'s bytes of a stream (None: merged) start within that stream."""
    if stream is Stream.STDOUT:
        return chunk.stdout_offset
    if stream is Stream.STDERR:
        return chunk.stderr_offset
    return chunk.all_offset


#: Where each stream's bytes of a chunk start, or end: (stdout, stderr).
Ends = tuple[int, int]
#: Where the first chunk starts.
START: Ends = (0, 0)


def ends_of(record: ChunkRecord) -> Ends:
    return (record.stdout_offset + record.stdout_size, record.stderr_offset + record.stderr_size)


def continues(store: Store, ends: Ends | None, record: ChunkRecord) -> Ends:
    """``record``'s ends, once it is checked to follow chunks read before it that ended
    at ``ends`` (None: it is the first read)."""
    if ends is not None:
        joined(store, record, ends, (record.stdout_offset, record.stderr_offset))
    return ends_of(record)


def joined(store: Store, record: ChunkRecord, ends: Ends, starts: Ends) -> None:
    """Check that chunks ending at ``ends`` and chunks starting at ``starts`` (``record``
    the first of the later ones) join: where they do not, the bytes between must be
    an output limit's gap, which the store counts as dropped; otherwise chunk rows
    were deleted behind the store's back: DamagedError. The record is read after the
    chunks, and the count grows in the transaction that deletes tail chunks, so it
    covers every gap a reader could have seen."""
    missing = [
        (s, start - end)
        for s, end, start in zip((Stream.STDOUT, Stream.STDERR), ends, starts, strict=True)
        if start > end
    ]
    if not missing:
        return
    ex = store.get(record.execution_id)
    for s, size in missing:
        dropped = ex.stdout_dropped if s is Stream.STDOUT else ex.stderr_dropped
        if size > dropped:
            raise DamagedError(
                f"the output of {record.execution_id} is damaged: {size} bytes of "
                f"{s.name.lower()} before chunk {record.chunk_index} are missing"
            )


def reached_end(store: Store, execution_id: str, ends: Ends | None) -> Execution:
    """The record of ``execution_id``, read after its chunks up to the newest (ending at
    ``ends``; None: not known), once it is checked that they reach its end.

    The row's ``stdout_size``/``stderr_size`` are updated in the transaction that adds
    chunks, to where those chunks end (an output limit's dropped bytes lie between the
    head and the tail, never after the newest chunk; a ``lost`` execution's row counts
    what was committed). So once the execution has ended, its newest chunk ends exactly
    there, and ending short means chunk rows at the end were deleted behind the store's
    back: DamagedError. Chunks committed after ``ends`` was found make it end short too,
    so before calling that damage the newest chunk is read again, after the row."""
    ex = store.get(execution_id)
    ended_whole(store, ex, ends)
    return ex


def ended_whole(store: Store, ex: Execution, ends: Ends | None) -> None:
    """:func:`reached_end`'s check, for a record ``ex`` read before the chunks that end at
    ``ends``."""
    if not ex.status.finished:
        return
    execution_id = ex.id
    sizes = (ex.stdout_size, ex.stderr_size)
    if ends is None or ends[0] < sizes[0] or ends[1] < sizes[1]:
        newest = store.chunks_before(execution_id, 1 << 62, 1)
        ends = ends_of(newest[0]) if newest else START
    for s, end, size in zip((Stream.STDOUT, Stream.STDERR), ends, sizes, strict=True):
        if end < size:
            raise DamagedError(
                f"the output of {execution_id} is damaged: the last {size - end} bytes of "
                f"{s.name.lower()} are missing"
            )


def read_range(
    store: Store, execution_id: str, stream: Stream | None, offset: int = 0, limit: int = 1 << 20
) -> Range:
    """Up to ``limit`` bytes of a stream from byte ``offset``, stopping before a gap."""
    first = store.chunk_containing(execution_id, stream, offset)
    after = -1 if first is None else first - 1
    out = bytearray()
    pos = offset
    batches = Batches()  # a chunk holds up to max_chunk_size: a small range needs one or two
    dropped = 0
    ends = START if after < 0 else None
    while len(out) < limit:
        records = store.chunks_after(execution_id, after, batches.size)
        batches.fetched(records)
        if not records:
            reached_end(store, execution_id, ends)
            return Range(bytes(out), offset, pos, True, dropped)
        for record in records:
            after = record.chunk_index
            ends = continues(store, ends, record)
            chunk = decode(record)
            data = chunk.data(stream)
            start = chunk_start(chunk, stream)
            if not data or start + len(data) <= pos:
                continue
            if start > pos:  # the bytes before this chunk were not kept
                if out:
                    return Range(bytes(out), offset, pos, False, dropped)
                dropped, pos = dropped + start - pos, start
            piece = data[pos - start : pos - start + (limit - len(out))]
            out += piece
            pos += len(piece)
            if len(out) >= limit:
                break
    return Range(bytes(out), offset, pos, False, dropped)


def read_all(store: Store, execution_id: str, stream: Stream | None) -> bytes:
    """The whole stored output of a stream (mind the size)."""
    out = bytearray()
    for piece in iter_output(store, execution_id, stream):
        out += piece
    return bytes(out)


def iter_chunks(store: Store, execution_id: str, after: int = -1) -> Iterator[ChunkRecord]:
    """Stored chunk rows after index ``after``, in order, about :data:`BATCH_BYTES` at a time."""
    batches = Batches()
    ends = START if after < 0 else None
    while True:
        records = store.chunks_after(execution_id, after, batches.size)
        batches.fetched(records)
        if not records:
            reached_end(store, execution_id, ends)
            return
        for record in records:
            ends = continues(store, ends, record)
            yield record
        after = records[-1].chunk_index


def iter_output(store: Store, execution_id: str, stream: Stream | None) -> Iterator[bytes]:
    """Stored output, chunk by chunk, without holding more than a batch in memory.

    Only the kept bytes: across a gap, the head is followed by the tail.
    """
    for piece in iter_pieces(store, execution_id, stream):
        if not isinstance(piece, Gap):
            yield piece


def check(store: Store, execution_id: str, budget: int) -> bool:
    """Read and check the stored chunks until ``budget`` bytes of output have been (a
    DamagedError at the first damaged one), holding nothing; True if that was all of them.

    A download calls it before it sends its headers, so damage found there becomes an
    error response instead of a body cut short."""
    seen = 0
    for record in iter_chunks(store, execution_id):
        decode(record)
        seen += record.stdout_size + record.stderr_size
        if seen >= budget:
            return False
    return True


def iter_pieces(store: Store, execution_id: str, stream: Stream | None) -> Iterator[bytes | Gap]:
    """Like :func:`iter_output`, with a :class:`Gap` where bytes were not kept."""
    cursor = Cursor(stream)
    for record in iter_chunks(store, execution_id):
        chunk = decode(record)
        yield from cursor.gaps(chunk)
        data = chunk.data(stream)
        if data:
            yield data


def tail(store: Store, execution_id: str, lines: int, stream: Stream | None = None) -> Range:
    """The last ``lines`` lines of a stream (a final line without newline counts).

    ``next_offset`` is the end of what is stored, where a follower continues.
    The tail never reaches back across a gap: ``dropped`` then says how many
    bytes were not kept right before it.
    """
    pieces: list[bytes] = []
    newlines = 0
    before = 1 << 62
    end: int | None = None
    edge = _Edge(store, stream)
    batch = 1  # the newest chunk usually holds enough lines: fetch more only when not
    while lines > 0 and not edge.dropped:
        records = store.chunks_before(execution_id, before, batch)
        if not records:
            edge.join(None)
            break
        batch = min(batch * 2, 8)
        for record in records:
            before = record.chunk_index
            edge.join(record)
            chunk = decode(record)
            data = chunk.data(stream)
            if not data:
                continue
            if edge.gap_after(chunk):
                break
            if end is None:
                end = chunk_start(chunk, stream) + len(data)
            newlines += data.count(b"\n") - (1 if not pieces and data.endswith(b"\n") else 0)
            pieces.append(data)
            if newlines >= lines:
                break
        if newlines >= lines:
            break
    ex = reached_end(store, execution_id, edge.newest)
    if end is None:
        size = _size_of(ex, stream)
        return Range(b"", size, size, True)
    text = b"".join(reversed(pieces))
    body = text[:-1] if text.endswith(b"\n") else text
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            break
    data = text if cut < 0 else text[cut + 1 :]
    dropped = edge.dropped if cut < 0 else 0
    return Range(data, end - len(data) - dropped, end, True, dropped)


class _Edge:
    """Walking chunks newest first: where each stream's collected bytes start; finds a gap."""

    def __init__(self, store: Store, stream: Stream | None) -> None:
        self.store = store
        self.stream = stream
        self.start: dict[Stream, int] = {}
        self.dropped = 0
        self._newer: ChunkRecord | None = None
        #: Where the newest chunk ends (START: there is none), once one was joined.
        self.newest: Ends | None = None

    def join(self, record: ChunkRecord | None) -> None:
        """Check that ``record`` (None: the start of the output) ends where the one read
        before it starts (:func:`joined`)."""
        newer = self._newer
        if self.newest is None:
            self.newest = START if record is None else ends_of(record)
        if newer is not None:
            ends = START if record is None else ends_of(record)
            joined(self.store, newer, ends, (newer.stdout_offset, newer.stderr_offset))
        self._newer = record

    def gap_after(self, chunk: Chunk) -> bool:
        """True (and ``dropped`` set) when bytes are missing between ``chunk`` and newer ones."""
        spans = _spans(chunk, self.stream)
        for s, start, data in spans:
            newer = self.start.get(s)
            if newer is not None and start + len(data) < newer:
                self.dropped = newer - start - len(data)
                return True
        for s, start, _ in spans:
            self.start[s] = start
        return False


def _size_of(ex: Execution, stream: Stream | None) -> int:
    if stream is Stream.STDOUT:
        return ex.stdout_size
    if stream is Stream.STDERR:
        return ex.stderr_size
    return ex.stdout_size + ex.stderr_size


def wait_for(
    store: Store, execution_id: str, timeout: float | None = None, lost_after: float | None = None
) -> Execution:
    """The final record of ``execution_id`` once it has ended (TimeoutError after ``timeout``).

    With ``lost_after``, an execution whose capturing process stopped heartbeating that
    long ago is marked ``lost`` (as a follower does), so a wait never outlasts a dead capture.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    next_check = time.monotonic() + (lost_after or 0) / 4
    while True:
        ex = store.get(execution_id)
        if ex.status.finished:
            return ex
        if lost_after is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + lost_after / 4
            if end_lost(store, lost_after, execution_id):
                continue
        left = 1.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"execution {execution_id} still {ex.status.value} after {timeout:g} s"
            )
        store.wait(execution_id, min(left, 1.0))


class Follower:
    """Follows an execution's output from another thread or process until it ends.

    Each :meth:`poll` returns the pieces committed since the last call, tagged
    with their stream, or waits up to ``timeout`` for some; :attr:`done` turns
    True once the execution has finished and everything stored was returned.
    With ``lost_after``, a follower that sees no new output also asks, at most
    every quarter of it, whether the capturing process stopped heartbeating that
    long ago; if so the execution is marked ``lost`` and the follow ends
    (:func:`outspool.heartbeat.end_lost`; nothing is killed). Memory is bounded
    by ``batch`` chunks per call. Where bytes were not kept (an output limit, or
    a tail window that slid past a slow follower), a :class:`Gap` comes in their
    place.

    One gap, one notice: while a limited stream floods, its tail window slides
    faster than anyone reads it, so a follower handing out what it finds would give
    a gap notice every few commits. Chunks from a gap on are held back instead; a
    later gap in the same stream means the tail held before it left the window (at
    least a window's worth of newer bytes exists), so it is let go and the gap
    grows. What is held comes out once ``hold`` seconds pass without a new gap
    (while the follower is not behind), or the execution ends, or more than
    :data:`HOLD_BYTES` are held: a flood shorter than ``hold`` between its gaps,
    followed from start to end, shows one gap.
    """

    def __init__(
        self,
        store: Store,
        execution_id: str,
        stream: Stream | None = None,
        offset: int = 0,
        *,
        lost_after: float | None = None,
        batch: int = _BATCH,
        hold: float = HOLD_SECONDS,
    ) -> None:
        self.store = store
        self.execution_id = execution_id
        self.stream = stream
        self.offset = offset  # position in the followed stream of the next byte to return
        self.lost_after = lost_after
        self.done = False
        #: The record as of the last :meth:`read`; it shows the end only once :attr:`done`.
        self.execution: Execution | None = None
        #: True when the last read returned a full batch: more was stored than it took.
        self.behind = False
        self._batches = Batches(batch)
        self._next_lost_check = 0.0
        first = store.chunk_containing(execution_id, stream, offset) if offset else None
        self._after = -1 if first is None else first - 1  # the last chunk fetched
        self._held: list[Chunk] = []  # fetched, not handed out: from a gap on
        self._hold = hold
        self._gap_seen = 0.0  # when the latest gap was fetched (monotonic)
        self._tails: dict[Stream, list[int]] = {}  # held chunks past a stream's first held gap
        # where each stream's last fetched chunk ends (from the start: every stream at 0)
        self._tip = {} if offset else {s: 0 for s in Stream if stream in (None, s)}
        self._ends = START if self._after < 0 else None  # where the chunks read so far end

    def poll(self, timeout: float = 1.0) -> list[tuple[Stream, bytes | Gap]]:
        """New output, waiting up to ``timeout`` seconds when there is none yet."""
        return self._fresh(self.poll_chunks(timeout))

    def read(self) -> list[tuple[Stream, bytes | Gap]]:
        """What was committed since the last call (at most ``batch`` chunks), without waiting."""
        return self._fresh(self.read_chunks())

    def poll_chunks(self, timeout: float = 1.0) -> list[Chunk]:
        """Like :meth:`poll`, as whole decoded chunks (for readers that cut lines): the
        first may start before ``offset``, which they leave where it was."""
        found = self.read_chunks()
        if found or self.done or timeout <= 0:
            return found
        self.wait(timeout)
        return self.read_chunks()

    def read_chunks(self) -> list[Chunk]:
        """Like :meth:`read`, as whole decoded chunks."""
        if self.done:
            return []
        record = self.store.get(self.execution_id)  # before the chunks: the end follows them
        found, more = self._fetch()
        self.behind = more
        if more:  # output is left to read: an ended record would announce the end too soon
            if not record.status.finished:
                self.execution = record
            return self._settle(found, release=False)
        self.execution = record
        if record.status.finished:
            ended_whole(self.store, record, self._ends)
            self.done = True
        elif not found and self._capture_lost():
            return self.read_chunks()
        return self._settle(found, release=self.done)

    def wait(self, timeout: float) -> None:
        """Return when new output may have been committed, or after ``timeout`` seconds."""
        self.store.wait(self.execution_id, timeout)

    def fork(self) -> Follower:
        """A follower of the same output from the same place (reads nothing)."""
        twin = copy.copy(self)
        twin._batches = Batches(self._batches.most)
        twin._held = list(self._held)
        twin._tails = {s: list(held) for s, held in self._tails.items()}
        twin._tip = dict(self._tip)
        return twin

    @property
    def after(self) -> int:
        """The index of the last chunk handed out (-1 before the first)."""
        return self._held[0].chunk_index - 1 if self._held else self._after

    @property
    def holding(self) -> bool:
        """Whether chunks past a gap are held back (see the class)."""
        return bool(self._held)

    def level_with(self, other: Follower) -> bool:
        """Whether this follower stands where ``other`` does: the same stream, the same
        chunks handed out, the same offset, nothing held back by either (so the same chunks
        taken next give both the same pieces)."""
        return (
            self.after == other.after
            and self.offset == other.offset
            and self.stream == other.stream
            and not self._held
            and not other._held
        )

    def take(
        self, chunks: list[Chunk], record: Execution, ended: bool
    ) -> list[tuple[Stream, bytes | Gap]]:
        """Like :meth:`read`, for chunks someone else read: the ones after :attr:`after`, in
        order, with the record read before them. ``ended``: they reach the end of a finished
        execution (the follow is then done). A server reads new chunks once for all its
        followers of an execution this way (:mod:`outspool.web.streams`)."""
        if chunks:  # they cover what this one held, if anything (they start after `after`)
            last = chunks[-1]
            self._after = last.chunk_index
            # where they end, for the check of the next chunks it reads itself (joined)
            self._ends = (
                last.stdout_offset + len(last.stdout),
                last.stderr_offset + len(last.stderr),
            )
            self._held, self._tails = [], {}
            self._track(chunks)
        if ended or not record.status.finished:  # as in read_chunks: the end comes last
            self.execution = record
        self.behind = False
        self.done = ended
        return self._fresh(chunks)

    def __iter__(self) -> Iterator[tuple[Stream, bytes | Gap]]:
        while not self.done:
            yield from self.poll()

    async def __aiter__(self) -> AsyncIterator[tuple[Stream, bytes | Gap]]:
        while not self.done:
            for item in await to_thread(self.poll):
                yield item

    def _capture_lost(self) -> bool:
        if self.lost_after is None or time.monotonic() < self._next_lost_check:
            return False
        self._next_lost_check = time.monotonic() + self.lost_after / 4
        return bool(end_lost(self.store, self.lost_after, self.execution_id))

    def _fetch(self) -> tuple[list[Chunk], bool]:
        asked = self._batches.size
        records = self.store.chunks_after(self.execution_id, self._after, asked)
        self._batches.fetched(records)
        if records:
            self._after = records[-1].chunk_index
        for record in records:
            self._ends = continues(self.store, self._ends, record)
        return [decode(r) for r in records], len(records) == asked

    def _settle(self, found: list[Chunk], release: bool) -> list[Chunk]:
        """The chunks to hand out now, of those held and ``found`` (see the class); the
        rest stay held. ``release``: the execution ended and all was read."""
        if not self._held and not found:
            return []
        out: list[Chunk] = []
        gapped = False
        for chunk in found:
            gaps = [
                s for s, start, _ in _spans(chunk, self.stream) if start > self._tip.get(s, start)
            ]
            self._track([chunk])
            if not gaps and not self._held:
                out.append(chunk)
                continue
            gapped = gapped or bool(gaps)
            for s in gaps:  # a later gap of s: what s held past its first one left the window
                doomed = set(self._tails.get(s, ()))
                self._held = [c for c in self._held if c.chunk_index not in doomed]
                self._tails[s] = []
            for s, _, _ in _spans(chunk, self.stream):
                if s in self._tails:
                    self._tails[s].append(chunk.chunk_index)
            self._held.append(chunk)
        now = time.monotonic()
        if gapped:
            self._gap_seen = now
        held = sum(len(c.stdout) + len(c.stderr) for c in self._held)
        settled = not self.behind and now >= self._gap_seen + self._hold
        if release or held > HOLD_BYTES or settled:
            out += self._held
            self._held, self._tails = [], {}
        return out

    def _track(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            for s, start, data in _spans(chunk, self.stream):
                self._tip[s] = max(self._tip.get(s, 0), start + len(data))

    def _fresh(self, chunks: list[Chunk]) -> list[tuple[Stream, bytes | Gap]]:
        """The chunks' pieces past ``offset`` (a Gap before a chunk that starts past it);
        moves ``offset`` past them."""
        out: list[tuple[Stream, bytes | Gap]] = []
        for chunk in chunks:
            start = chunk_start(chunk, self.stream)
            pieces = self._pieces(chunk)
            if pieces and start > self.offset:  # a gap (tail chunks hold one stream only)
                stream = pieces[0][0]
                size = start - self.offset
                out.append((stream, Gap(stream, chunk_start(chunk, stream) - size, size)))
                self.offset = start
            skip = max(0, self.offset - start)
            for stream, piece in pieces:
                if skip >= len(piece):
                    skip -= len(piece)
                    continue
                fresh = piece[skip:]
                skip = 0
                out.append((stream, fresh))
                self.offset += len(fresh)
        return out

    def _pieces(self, chunk: Chunk) -> list[tuple[Stream, bytes]]:
        if self.stream is None:
            return chunk.tagged()
        data = chunk.data(self.stream)
        return [(self.stream, data)] if data else []


async def to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """asyncio.to_thread, imported on first use: the CLI never pays for asyncio."""
    import asyncio

    return await asyncio.to_thread(func, *args, **kwargs)
