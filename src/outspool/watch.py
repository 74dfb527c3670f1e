"""Following several executions at once, and those that start later (``logs -f`` with
several IDs, names or ``--label``; like ``docker compose logs -f``).

A :class:`Watch` holds one follower per execution and, each round, asks the
store for executions created since it began that carry all of the followed
labels, so a matching execution that starts later is picked up from its first
byte. Output comes back as whole lines, so lines of different executions never
cut into each other. With labels it never ends by itself (stop it); with only
given executions it ends when all of them have ended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from outspool.follow import Follower
from outspool.lines import Line, LineSplitter
from outspool.models import Execution, Stream
from outspool.store.base import Store

DISCOVER_LIMIT = 1000


@dataclass
class _Followed:
    execution: Execution
    follower: Follower
    splitter: LineSplitter


@dataclass(frozen=True, slots=True)
class Selector:
    """What to follow: these executions, and any created later carrying all of ``labels``."""

    executions: tuple[Execution, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


class Watch:
    """Whole lines of every selected execution as they are stored."""

    def __init__(
        self,
        store: Store,
        selector: Selector,
        stream: Stream | None = None,
        since: float | None = None,
        *,
        lost_after: float | None = None,
    ) -> None:
        self.store = store
        self._lost_after = lost_after
        self.selector = selector
        self.stream = stream
        self._since = time.time() if since is None else since  # discovery looks from here
        self._followed: dict[str, _Followed] = {}
        self._finished: set[str] = set()
        for ex in selector.executions:
            self._add(ex)

    @property
    def done(self) -> bool:
        """True once every followed execution has ended and none can be added."""
        return not self.selector.labels and not self._followed

    def poll(self, timeout: float = 0.5) -> list[tuple[Execution, Line]]:
        """New complete lines (a last unfinished line once its execution ends)."""
        self._discover()
        out: list[tuple[Execution, Line]] = []
        for key in list(self._followed):
            out += self._drain(self._followed[key])
        if not out and not self.done:
            self._wait(timeout)
        return out

    def _drain(self, followed: _Followed) -> list[tuple[Execution, Line]]:
        ex = followed.execution
        lines: list[Line] = []
        for chunk in followed.follower.read_chunks():
            lines += followed.splitter.feed(chunk)
        if followed.follower.done:
            last = followed.splitter.finish()
            if last is not None:
                lines.append(last)
            del self._followed[ex.id]
            self._finished.add(ex.id)
        return [(ex, line) for line in lines]

    def _discover(self) -> None:
        if not self.selector.labels:
            return
        found = self.store.list_executions(
            limit=DISCOVER_LIMIT, labels=self.selector.labels, since=self._since
        )
        for ex in reversed(found):  # oldest first
            if ex.id not in self._followed and ex.id not in self._finished:
                self._add(ex)

    def _add(self, ex: Execution) -> None:
        follower = Follower(self.store, ex.id, self.stream, lost_after=self._lost_after)
        self._followed[ex.id] = _Followed(ex, follower, LineSplitter(self.stream))

    def _wait(self, timeout: float) -> None:
        running = next(iter(self._followed), None)
        if running is None:
            time.sleep(min(timeout, 0.2))
        else:
            self.store.wait(running, min(timeout, 0.2))
