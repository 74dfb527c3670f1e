"""New output of one execution, written once to every connection that has caught up with it.

A connection that has sent everything its execution's waiter has read, and has shown the
same record as the others, *joins* the waiter's :class:`Fanout` and waits there. When the
waiter reads new chunks, the fan-out turns them into events once (one follower stands for
all its members, one :class:`~outspool.web.sse.Events` encodes them) and writes the same
bytes to each member's :class:`~outspool.web.wire.Wire`: per connection and event, one
loop step and one socket write, no task woken, no ASGI layer crossed.

A member *leaves*, with a follower of its own from where it stands, when its client falls
behind (more than :data:`BEHIND` bytes unsent: it goes on at its own pace through its
own task, which waits for the socket, so a slow client never holds up the others and
holds at most that much plus one batch of events here), when its client is gone, when
the execution ended (after its final events were written), or when the waiter stops.
Keepalive comments go to members that sent nothing for ``keepalive`` seconds, as they
would on their own.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from outspool.follow import Follower
from outspool.models import Chunk, Execution
from outspool.web.sse import KEEPALIVE_EVENT, Events, step_of
from outspool.web.wire import Wire, frame

BEHIND = 256 << 10  # unsent bytes past which a member leaves and goes on at its own pace
PART = 4  # chunks written at most per write (as a connection reads at most 4 at a time)
_KEEPALIVE_FRAMED = frame(KEEPALIVE_EVENT)


@dataclass(eq=False, slots=True)
class Member:
    """One connection in a fan-out; ``left`` gets its follower and record when it leaves."""

    wire: Wire
    events: Events
    quiet_since: float  # when it last sent something (the event loop's clock)
    left: asyncio.Future[tuple[Follower, Execution]]


class Fanout:
    """The caught-up connections of one execution (see the module)."""

    def __init__(self) -> None:
        self.members: dict[Member, None] = {}  # in joining order
        self.follower: Follower | None = None  # where every member stands (while any)
        self.shown: Execution | None = None  # the record the members were last given
        self.events = Events()  # their events (what they showed)
        self.sent_at = -math.inf  # when the fan-out last wrote to every member
        self.keepalive_due = math.inf

    def join(self, follower: Follower, shown: Execution, member: Member, keepalive: float) -> bool:
        """Take ``member`` in if it stands where the members stand (``follower``: where it
        stands, caught up with the waiter's reader; ``shown``: its last record)."""
        if not member.wire.open:
            return False
        if self.follower is None:
            self.follower, self.shown = follower, shown
            self.events.encoded = member.events.encoded
            self.events.shown = member.events.shown
        elif not (
            follower.level_with(self.follower) and member.events.shows() == self.events.shows()
        ):
            return False
        self.members[member] = None
        self.keepalive_due = min(self.keepalive_due, member.quiet_since + keepalive)
        return True

    def discard(self, member: Member) -> None:
        """``member`` is gone (its task was cancelled): forget it."""
        self.members.pop(member, None)
        if not self.members:
            self._empty()

    def advance(
        self, chunks: list[Chunk], record: Execution, ended: bool, now: float, keepalive: float
    ) -> None:
        """Write the events of the waiter's latest read (``chunks``, right after where the
        members stand, the ``record`` read before them; ``ended``: they reach the end of a
        finished execution) to every member, at most :data:`PART` chunks per write."""
        done = 0
        while (follower := self.follower) is not None and self.shown is not None:
            self._drop_behind()  # before the write they could not take
            if self.follower is None:
                return
            part = chunks[done : done + PART]
            done += len(part)
            start = follower.offset
            found = follower.take(part, record, ended and done == len(chunks))
            step, self.shown = step_of(found, start, follower, self.shown)
            payload = self.events.encode(step) if step else b""
            if payload:  # (an empty write would be a chunked body's last chunk: its end)
                self._send(payload, now, keepalive)
            if follower.done:
                self.release()
            if done == len(chunks):
                return

    def keepalive(self, now: float, keepalive: float) -> None:
        """Send the keepalive comment to members that sent nothing for ``keepalive`` s."""
        if now < self.keepalive_due or self.follower is None:
            return
        self._drop_behind()
        due = math.inf
        for member in self.members:
            quiet = max(member.quiet_since, self.sent_at)
            if now - quiet >= keepalive:
                member.wire.write(KEEPALIVE_EVENT, _KEEPALIVE_FRAMED)
                quiet = member.quiet_since = now
            due = min(due, quiet + keepalive)
        self.keepalive_due = due

    def release(self) -> None:
        """Every member leaves (the execution ended, or the waiter stops or lost its reader)."""
        follower = self.follower
        if follower is None:
            return
        for member in list(self.members):  # an ended follow needs no follower of its own
            self._leave(member, follower if follower.done else follower.fork())

    def _drop_behind(self) -> None:
        """Members whose client is gone, or has not taken :data:`BEHIND` bytes, leave."""
        assert self.follower is not None
        behind = [m for m in self.members if not m.wire.open or m.wire.buffered() > BEHIND]
        for member in behind:
            self._leave(member, self.follower.fork())

    def _send(self, payload: bytes, now: float, keepalive: float) -> None:
        framed = frame(payload)
        for member in self.members:
            member.wire.write(payload, framed)
        self.sent_at = now
        self.keepalive_due = now + keepalive  # every member just sent something

    def _leave(self, member: Member, follower: Follower) -> None:
        del self.members[member]
        member.quiet_since = max(member.quiet_since, self.sent_at)
        member.events.shown = self.events.shown
        assert self.shown is not None
        if not member.left.done():
            member.left.set_result((follower, self.shown))
        if not self.members:
            self._empty()

    def _empty(self) -> None:
        self.follower = None
        self.sent_at, self.keepalive_due = -math.inf, math.inf
