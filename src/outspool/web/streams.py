"""Live output for HTTP followers, read through the library's follower.

Each connection follows with its own :class:`~outspool.follow.Follower` (from
``Outspool.follow``), reading at most :data:`BATCH` chunks at a time and the
next batch only once the previous one was handed on, so a connection holds a
bounded amount of output and a slow client slows only itself (the server's
send waits for the socket). The follower ends the stream when the execution
ends or its capturing process is lost, as it does for the CLI and the library.

Waiting and reading new output are shared: one :class:`Waiter` per followed
execution is poked by the store when that execution changed
(:meth:`~outspool.store.base.Store.subscribe`: one store thread serves all of
them, none blocks a thread per execution), reads what was committed once (into
a window of at most :data:`WINDOW_BYTES` of recent chunks) and wakes every
connection following it. A connection that has caught up takes its next pieces
from that window; one further behind (a late joiner, a slow client) reads the
store on its own until it catches up. So 500 watchers of one execution cost one
read per commit, not 500, and a commit to one of 100 followed executions wakes
that one's waiter only. A connection that has caught up and was given its socket's
:class:`~outspool.web.wire.Wire` waits in its waiter's :class:`~outspool.web.fanout.Fanout`
instead, which writes each read's events to all such connections at once, with no task
woken per connection (:meth:`Hub.events`). Offsets are byte positions in the merged
(``all``) stream.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread

from outspool.client import Outspool
from outspool.errors import OutspoolError
from outspool.follow import Follower, Gap
from outspool.models import Chunk, Execution, Stream
from outspool.pieces import Piece
from outspool.web.fanout import Fanout, Member
from outspool.web.sse import RETRY, Events, FeedError, Item, output_events, step_of
from outspool.web.wire import Wire

__all__ = ["BATCH", "KEEPALIVE", "FeedError", "Hub", "Item", "Waiter"]

BATCH = 4  # chunks read per step by one connection (each at most max_chunk_size)
_WAIT = 1.0  # seconds a waiter waits for a poke before reading anyway (and noticing it is unused)
KEEPALIVE = 15.0  # seconds of silence after which a follower is sent ``None`` (at a wake-up)
WINDOW_BYTES = 4 << 20  # recent output a waiter keeps for the connections it serves
ENCODED_BYTES = 4 << 20  # encoded events the hub keeps for connections sending the same piece
ENCODED_PIECE = 64 << 10  # ... each of a piece of at most this many bytes

T = TypeVar("T")


class Waiter:
    """Hears from the store when one execution changed while anyone follows it, reads what is
    new once for all of them, and wakes them all."""

    def __init__(self, hub: Hub, execution_id: str) -> None:
        self.hub = hub
        self.execution_id = execution_id
        self.users = 0
        self.changed = asyncio.Event()  # replaced after every wake
        self.poked = asyncio.Event()  # set by the store when the execution may have changed
        self.unsubscribe: Callable[[], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.reader: Follower | None = None  # the shared reader, from where one caught up
        self.window: list[Chunk] = []  # the reader's latest chunks, in order, from window[head]
        self.keys: list[int] = []  # their chunk indexes (for bisect)
        self.head = 0  # window[:head] fell out (deleted in halves, so trimming costs O(1))
        self.window_after = -1  # the reader had read up to this chunk before window[0]
        self.window_bytes = 0
        self.record: Execution | None = None  # as the reader last read it, before its chunks
        self.ended = False  # the reader has read the last chunk of a finished execution
        self.fanout = Fanout()  # the connections that caught up, written to directly

    def subscribe(self) -> None:
        """Have the store poke this waiter whenever the execution may have changed (its one
        thread serves every waiter: no thread waits per execution)."""
        loop = asyncio.get_running_loop()

        def poke() -> None:  # on the store's thread
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self.poked.set)

        self.unsubscribe = self.hub.spool.store.subscribe(self.execution_id, poke)

    async def run(self) -> None:
        clock = asyncio.get_running_loop().time
        try:
            while self.users:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poked.wait(), _WAIT)
                self.poked.clear()  # before reading: a commit from now on pokes again
                try:
                    await self._refresh()
                except OutspoolError:  # the store is away: followers meet it on their reads
                    self.reader = None
                    self.fanout.release()
                    await asyncio.sleep(_WAIT)
                self.fanout.keepalive(clock(), KEEPALIVE)
                self.wake()
        finally:
            self.fanout.release()
            if self.unsubscribe is not None:
                self.unsubscribe()
            self.hub.forget(self)

    def wake(self) -> None:
        woken, self.changed = self.changed, asyncio.Event()
        woken.set()

    def join(self, follower: Follower) -> None:
        """``follower`` found nothing more stored: the shared reader starts from there
        (if none has yet)."""
        if self.reader is None:
            self.reader = follower.fork()
            self.window, self.keys, self.head = [], [], 0
            self.window_after = follower.after
            self.window_bytes = 0
            self.record = follower.execution
            self.ended = follower.done

    def fan_in(self, follower: Follower, shown: Execution, member: Member) -> bool:
        """Have the fan-out write to ``member`` from now on, if ``follower`` (where it
        stands, with ``shown`` its last record) has caught up with the reader."""
        reader = self.reader
        if not self.users or reader is None or self.ended or follower.holding:
            return False
        if follower.after != reader.after:
            return False
        return self.fanout.join(follower, shown, member, KEEPALIVE)

    def serve(self, follower: Follower) -> list[tuple[Stream, bytes | Gap]] | None:
        """``follower``'s next pieces from the window (at most :data:`BATCH` chunks), or
        None when it is not within the window and must read the store itself."""
        reader, record = self.reader, self.record
        if reader is None or record is None or not self.window_after <= follower.after:
            return None
        if follower.after == reader.after:  # caught up: nothing new until the next read
            return follower.take([], record, self.ended)
        if follower.after > reader.after:
            return None
        first = bisect.bisect_right(self.keys, follower.after, self.head)
        chunks = self.window[first : first + BATCH]
        ended = self.ended and chunks[-1].chunk_index == reader.after
        return follower.take(chunks, record, ended)

    async def _refresh(self) -> None:
        """Read what was committed since the last refresh into the window."""
        while (reader := self.reader) is not None and not self.ended:
            chunks = await self.hub.in_thread(reader.read_chunks, waiting=True)
            if reader is not self.reader:  # dropped meanwhile
                return
            self.record, self.ended = reader.execution, reader.done
            for chunk in chunks:
                self._keep(chunk)
            if self.record is not None:  # the fan-out stays where the reader is
                now = asyncio.get_running_loop().time()
                self.fanout.advance(chunks, self.record, self.ended, now, KEEPALIVE)
            if not reader.behind:
                return

    def _keep(self, chunk: Chunk) -> None:
        self.window.append(chunk)
        self.keys.append(chunk.chunk_index)
        self.window_bytes += len(chunk.stdout) + len(chunk.stderr)
        while self.window_bytes > WINDOW_BYTES and len(self.window) - self.head > 1:
            old = self.window[self.head]
            self.head += 1
            self.window_after = old.chunk_index
            self.window_bytes -= len(old.stdout) + len(old.stderr)
        if self.head > len(self.window) // 2:
            del self.window[: self.head], self.keys[: self.head]
            self.head = 0


class Hub:
    """The waiters of one app; blocking calls run in threads, under limits of their own."""

    def __init__(self, spool: Outspool, max_waiters: int = 64, max_reads: int = 16) -> None:
        self.spool = spool
        self.waiters: dict[str, Waiter] = {}
        self._limits: dict[bool, anyio.CapacityLimiter] = {}
        self._max = {True: max_waiters, False: max_reads}
        self._encoded: dict[tuple[str, int, Stream, int], bytes] = {}  # oldest first
        self._encoded_bytes = 0

    def encoded(self, execution_id: str, piece: Piece, encode: Callable[[Piece], bytes]) -> bytes:
        """``encode(piece)``, made once for all the connections that send that piece (the
        bytes at an offset never change; the newest :data:`ENCODED_BYTES` are kept)."""
        if len(piece.data) > ENCODED_PIECE or piece.dropped:
            return encode(piece)
        key = (execution_id, piece.start, piece.stream, len(piece.data))
        found = self._encoded.get(key)
        if found is None:
            found = self._encoded[key] = encode(piece)
            self._encoded_bytes += len(found)
            while self._encoded_bytes > ENCODED_BYTES:
                self._encoded_bytes -= len(self._encoded.pop(next(iter(self._encoded))))
        return found

    async def in_thread(self, func: Callable[..., T], *args: object, waiting: bool = False) -> T:
        limiter = self._limits.get(waiting)
        if limiter is None:
            limiter = self._limits[waiting] = anyio.CapacityLimiter(self._max[waiting])
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    def forget(self, waiter: Waiter) -> None:
        key = waiter.execution_id
        if self.waiters.get(key) is waiter:
            del self.waiters[key]

    @asynccontextmanager
    async def watching(self, follower: Follower) -> AsyncIterator[Waiter]:
        """The waiter of ``follower``'s execution, started for the first user."""
        key = follower.execution_id
        waiter = self.waiters.get(key)
        if waiter is None:
            waiter = self.waiters[key] = Waiter(self, key)
        if waiter.task is None:
            waiter.subscribe()  # before the follower's first read: no commit falls between
            waiter.task = asyncio.create_task(waiter.run(), name=f"outspool-wait-{key}")
        waiter.users += 1  # (not when subscribing failed: the next user tries again)
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
        async for step in self.steps(execution, offset):
            for item in step:
                yield item

    async def events(
        self, execution: Execution, offset: int, wire: Wire | None = None
    ) -> AsyncIterator[bytes]:
        """The server-sent events of :meth:`steps`, a write per step. With the ``wire`` of
        the connection they go out on, the stream joins its waiter's fan-out whenever it
        has caught up (:mod:`outspool.web.fanout`), which then writes to the wire directly
        what all its members send, until the stream falls behind or ends."""

        def encoded(piece: Piece) -> bytes:
            return self.encoded(execution.id, piece, output_events)

        events = Events(encoded)
        yield RETRY
        async for step in self.steps(execution, offset, None if wire is None else (wire, events)):
            payload = events.encode(step)
            if payload:
                yield payload

    async def steps(
        self, execution: Execution, offset: int, direct: tuple[Wire, Events] | None = None
    ) -> AsyncIterator[list[Item]]:
        """The items of :meth:`follow`, as lists of those found at once (after one wake-up
        or read), so a connection that fell behind sends them in one write, not one each.
        ``direct``: the wire and the events of the connection (see :meth:`events`)."""
        if not execution.status.finished:
            yield [execution]
        try:
            follower = await self.in_thread(self._follower, execution.id, offset)
            async with self.watching(follower) as waiter:
                async for step in self._steps(follower, waiter, execution, direct):
                    yield step
        except OutspoolError as exc:
            yield [FeedError(str(exc))]

    def _follower(self, execution_id: str, offset: int) -> Follower:
        return self.spool.follow(execution_id, None, offset, batch=BATCH)

    async def _steps(
        self,
        follower: Follower,
        waiter: Waiter,
        shown: Execution,
        direct: tuple[Wire, Events] | None,
    ) -> AsyncIterator[list[Item]]:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            changed = waiter.changed  # taken before reading: a later commit wakes it
            start = follower.offset
            found = waiter.serve(follower)
            if found is None:
                found = await self.in_thread(follower.read)
                if not found:  # it has read all that is stored
                    waiter.join(follower)
            step, shown = step_of(found, start, follower, shown)
            if step:
                yield step
                quiet_since = loop.time()
            if follower.done:
                return
            if found:
                continue
            if direct is not None:
                member = Member(*direct, quiet_since, loop.create_future())
                if waiter.fan_in(follower, shown, member):
                    try:  # the fan-out writes for it until it leaves
                        follower, shown = await member.left
                    finally:
                        waiter.fanout.discard(member)
                    quiet_since = member.quiet_since
                    if follower.done:
                        return
                    continue
            # No timer per wait (one per connection and wake-up cost 6 of the ~50 µs
            # an event costs): the waiter wakes its followers at least every _WAIT s.
            await changed.wait()
            if loop.time() - quiet_since >= KEEPALIVE:
                yield [None]
                quiet_since = loop.time()
