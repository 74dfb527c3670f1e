"""Live output for HTTP followers: one shared follow loop per execution, fanned out.

A :class:`Feed` is the only thing that waits on the store for an execution: it
reads each newly committed chunk once and hands the pieces to every
:class:`Subscription`. A follower that starts behind (``Last-Event-ID``), or
falls behind because it reads slowly, fills the gap from stored chunks on its
own, so a slow client never holds the others back and never misses a byte.
Offsets are byte positions in the merged (``all``) stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from outspool.codec import decode
from outspool.errors import OutspoolError
from outspool.follow import Follower
from outspool.models import Execution, Stream
from outspool.store.base import Store

_BATCH = 64  # chunks read per step
_WAIT = 0.5  # seconds a feed waits on the store per step (also how soon it notices it is unused)
_QUEUE_LIMIT = 256  # items queued per subscriber before its output is dropped and re-read
KEEPALIVE = 15.0  # seconds of silence after which a follower is sent ``None``

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes of one stream, starting at ``start`` in the merged stream."""

    start: int
    stream: Stream
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True, slots=True)
class FeedError:
    """The store failed while following; the follower ends after reporting it."""

    message: str


Item = Piece | Execution | FeedError


class Subscription:
    """One follower's queue. Output beyond the limit is dropped and re-read by the follower."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.behind = False  # output was dropped: read it back from the store
        self.pending: Execution | None = None  # the latest record, when it could not be queued

    def offer(self, item: Item) -> None:
        final = isinstance(item, FeedError) or (
            isinstance(item, Execution) and item.status.finished
        )
        if final or self.queue.qsize() < _QUEUE_LIMIT:
            self.queue.put_nowait(item)
        elif isinstance(item, Execution):
            self.pending = item
        else:
            self.behind = True


class Feed:
    """The follow loop of one execution, running while anyone subscribes."""

    def __init__(self, hub: Hub, execution_id: str) -> None:
        self.hub = hub
        self.execution_id = execution_id
        self.subscriptions: set[Subscription] = set()
        self.end = 0  # where the output read so far ends
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._after = -1  # the last chunk index read

    def _start_position(self) -> int:
        """Begin at the end of what is stored: subscribers read older output themselves."""
        last = self.hub.store.chunks_before(self.execution_id, 1 << 62, 1)
        if not last:
            return 0
        chunk = decode(last[0])
        self._after = chunk.chunk_index
        return chunk.all_offset + len(chunk.data(None))

    def _step(self, wait: bool) -> tuple[list[Piece], Execution, bool]:
        """New pieces, the record read before them, and whether more chunks are waiting."""
        if wait:
            self.hub.store.wait(self.execution_id, _WAIT)
        ex = self.hub.store.get(self.execution_id)  # before the chunks: a final record
        records = self.hub.store.chunks_after(self.execution_id, self._after, _BATCH)
        pieces: list[Piece] = []
        for record in records:
            chunk = decode(record)
            self._after = chunk.chunk_index
            pos = chunk.all_offset
            for stream, data in chunk.tagged():
                pieces.append(Piece(pos, stream, data))
                pos += len(data)
        return pieces, ex, len(records) == _BATCH

    async def run(self) -> None:
        try:
            self.end = await self.hub.in_thread(self._start_position)
        except OutspoolError as exc:
            self._publish(FeedError(str(exc)))
            self.hub.forget(self)
            return
        finally:
            self.ready.set()
        try:
            await self._loop()
        except OutspoolError as exc:
            self._publish(FeedError(str(exc)))
        finally:
            self.hub.forget(self)

    async def _loop(self) -> None:
        last: Execution | None = None
        more = True
        while self.subscriptions:
            pieces, ex, more = await self.hub.in_thread(self._step, not more)
            for piece in pieces:
                self.end = piece.end
                self._publish(piece)
            if ex.status.finished and more:
                continue  # the final record goes out after the last output
            if last is None or ex != last:
                self._publish(ex)
                last = ex
            if ex.status.finished:
                return

    def _publish(self, item: Item) -> None:
        for sub in self.subscriptions:
            sub.offer(item)


class Hub:
    """All feeds of one app; blocking store calls run in threads, feeds under their own limit."""

    def __init__(self, store: Store, max_feeds: int = 64) -> None:
        self.store = store
        self.feeds: dict[str, Feed] = {}
        self._limiter: anyio.CapacityLimiter | None = None
        self._max_feeds = max_feeds

    async def in_thread(self, func: Callable[..., T], *args: object) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_feeds)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def forget(self, feed: Feed) -> None:
        if self.feeds.get(feed.execution_id) is feed:
            del self.feeds[feed.execution_id]

    async def subscribe(self, execution_id: str) -> tuple[Feed, Subscription]:
        feed = self.feeds.get(execution_id)
        if feed is None:
            feed = self.feeds[execution_id] = Feed(self, execution_id)
            feed.task = asyncio.create_task(feed.run(), name=f"outspool-feed-{execution_id}")
        sub = Subscription()
        feed.subscriptions.add(sub)
        await feed.ready.wait()
        return feed, sub

    async def close(self) -> None:
        """Stop every feed (each notices within one wait)."""
        feeds = list(self.feeds.values())
        for feed in feeds:
            feed.subscriptions.clear()
        await asyncio.gather(*(f.task for f in feeds if f.task is not None), return_exceptions=True)

    async def follow(
        self, execution: Execution, offset: int
    ) -> AsyncIterator[Piece | Execution | FeedError | None]:
        """Output from ``offset`` on and the record as it changes, the final record last
        (first too, while running). ``None`` comes after :data:`KEEPALIVE` s of silence."""
        if execution.status.finished:
            async for piece in self._read_back(execution.id, offset, _size(execution)):
                yield piece
            yield execution
            return
        yield execution
        feed, sub = await self.subscribe(execution.id)
        reader = _Reader(self, execution.id, offset)
        try:
            async for piece in reader.fill(feed.end):
                yield piece
            while True:
                async for item in reader.next(feed, sub):
                    yield item
                    if isinstance(item, FeedError):
                        return
                    if isinstance(item, Execution) and item.status.finished:
                        return
        finally:
            feed.subscriptions.discard(sub)

    async def _read_back(self, execution_id: str, offset: int, until: int) -> AsyncIterator[Piece]:
        async for piece in _Reader(self, execution_id, offset).fill(until):
            yield piece


def _size(ex: Execution) -> int:
    return ex.stdout_size + ex.stderr_size


class _Reader:
    """One follower's position, and how it reads gaps from the store."""

    def __init__(self, hub: Hub, execution_id: str, offset: int) -> None:
        self.hub = hub
        self.execution_id = execution_id
        self.pos = offset

    async def fill(self, until: int) -> AsyncIterator[Piece]:
        """Stored output from the current position up to at least ``until``."""
        if self.pos >= until:
            return
        follower = await anyio.to_thread.run_sync(
            Follower, self.hub.store, self.execution_id, None, self.pos
        )
        while self.pos < until:
            start = follower.offset
            found = await anyio.to_thread.run_sync(follower.poll, 0.0)
            if not found:
                return
            for stream, data in found:
                piece = Piece(start, stream, data)
                start = piece.end
                for fresh in self.take(piece):
                    yield fresh

    def take(self, piece: Piece) -> list[Piece]:
        """The part of ``piece`` not yet returned (dropping what was), advancing the position."""
        if piece.end <= self.pos or piece.start > self.pos:
            return []
        fresh = Piece(self.pos, piece.stream, piece.data[self.pos - piece.start :])
        self.pos = fresh.end
        return [fresh]

    async def next(self, feed: Feed, sub: Subscription) -> AsyncIterator[Item | None]:
        """What the feed published next, with any gap before it filled from the store."""
        if sub.queue.empty() and sub.pending is not None:
            pending, sub.pending = sub.pending, None
            yield pending
            return
        if sub.queue.empty() and sub.behind:
            sub.behind = False
            async for piece in self.fill(feed.end):
                yield piece
            return
        try:
            item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE)
        except TimeoutError:
            yield None
            return
        if isinstance(item, Piece):
            async for piece in self.fill(item.start):
                yield piece
            for piece in self.take(item):
                yield piece
        elif isinstance(item, Execution) and item.status.finished:
            async for piece in self.fill(_size(item)):
                yield piece
            yield item
        else:
            yield item
