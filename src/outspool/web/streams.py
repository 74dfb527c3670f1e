"""Live output for HTTP followers, read through the library's follower.

Each connection follows with its own :class:`~outspool.follow.Follower` (from
``Outspool.follow``), reading at most :data:`BATCH` chunks at a time and the
next batch only once the previous one was handed on, so a connection holds a
bounded amount of output and a slow client slows only itself (the server's
send waits for the socket). The follower ends the stream when the execution
ends or its capturing process is lost, as it does for the CLI and the library.

Waiting is shared: one :class:`Waiter` per followed execution waits on the
store and wakes every connection following it, so many watchers of one
execution cost one store wait, not one each. Offsets are byte positions in the
merged (``all``) stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from outspool.client import Outspool
from outspool.errors import OutspoolError
from outspool.follow import Follower
from outspool.models import Execution
from outspool.pieces import Piece

BATCH = 4  # chunks read per step by one connection (each at most max_chunk_size)
_WAIT = 1.0  # seconds a waiter waits on the store per step (also how soon it notices it is unused)
KEEPALIVE = 15.0  # seconds of silence after which a follower is sent ``None``

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FeedError:
    """The store failed while following; the follower ends after reporting it."""

    message: str


Item = Piece | Execution | FeedError | None


class Waiter:
    """Waits on the store for one execution while anyone follows it, and wakes them all."""

    def __init__(self, hub: Hub, follower: Follower) -> None:
        self.hub = hub
        self.follower = follower  # only its wait() is used
        self.users = 0
        self.changed = asyncio.Event()  # replaced after every wake
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while self.users:
                try:
                    await self.hub.in_thread(self.follower.wait, _WAIT, waiting=True)
                except OutspoolError:  # the store is away: followers meet it on their reads
                    await asyncio.sleep(_WAIT)
                self.wake()
        finally:
            self.hub.forget(self)

    def wake(self) -> None:
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()


class Hub:
    """The waiters of one app; blocking calls run in threads, under limits of their own."""

    def __init__(self, spool: Outspool, max_waiters: int = 64, max_reads: int = 16) -> None:
        self.spool = spool
        self.waiters: dict[str, Waiter] = {}
        self._limits: dict[bool, anyio.CapacityLimiter] = {}
        self._max = {True: max_waiters, False: max_reads}

    async def in_thread(self, func: Callable[..., T], *args: object, waiting: bool = False) -> T:
        limiter = self._limits.get(waiting)
        if limiter is None:
            limiter = self._limits[waiting] = anyio.CapacityLimiter(self._max[waiting])
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    def forget(self, waiter: Waiter) -> None:
        key = waiter.follower.execution_id
        if self.waiters.get(key) is waiter:
            del self.waiters[key]

    @asynccontextmanager
    async def watching(self, follower: Follower) -> AsyncIterator[Waiter]:
        """The waiter of ``follower``'s execution, started for the first user."""
        key = follower.execution_id
        waiter = self.waiters.get(key)
        if waiter is None:
            waiter = self.waiters[key] = Waiter(self, follower)
        waiter.users += 1
        if waiter.task is None:
            waiter.task = asyncio.create_task(waiter.run(), name=f"outspool-wait-{key}")
        try:
            yield waiter
        finally:
            waiter.users -= 1

    async def close(self) -> None:
        """Stop every waiter (each notices within one wait)."""
        waiters = list(self.waiters.values())
        for waiter in waiters:
            waiter.users = 0
        await asyncio.gather(*(w.task for w in waiters if w.task), return_exceptions=True)

    async def follow(self, execution: Execution, offset: int) -> AsyncIterator[Item]:
        """Output from ``offset`` on and the record as it changes, the final record last
        (the first record too, while running). ``None`` comes after :data:`KEEPALIVE` s
        of silence."""
        if not execution.status.finished:
            yield execution
        try:
            follower = await self.in_thread(self._follower, execution.id, offset)
            async with self.watching(follower) as waiter:
                async for item in self._items(follower, waiter, execution):
                    yield item
        except OutspoolError as exc:
            yield FeedError(str(exc))

    def _follower(self, execution_id: str, offset: int) -> Follower:
        return self.spool.follow(execution_id, None, offset, batch=BATCH)

    async def _items(
        self, follower: Follower, waiter: Waiter, shown: Execution
    ) -> AsyncIterator[Item]:
        while True:
            changed = waiter.changed  # taken before reading: a later commit wakes it
            start = follower.offset
            found = await self.in_thread(follower.read)
            for stream, data in found:
                yield Piece(start, stream, data)
                start += len(data)
            record = follower.execution
            # A finished record read before a full batch means more output is stored than
            # this step returned: it is sent once all of that has been (it is the last item).
            early = record is not None and record.status.finished and not follower.done
            if record is not None and (follower.done or (record != shown and not early)):
                yield record
                shown = record
            if follower.done:
                return
            if not found and not await _woken(changed):
                yield None


async def _woken(changed: asyncio.Event) -> bool:
    """Wait for a wake-up; False after :data:`KEEPALIVE` seconds without one."""
    try:
        await asyncio.wait_for(changed.wait(), KEEPALIVE)
    except TimeoutError:
        return False
    return True
