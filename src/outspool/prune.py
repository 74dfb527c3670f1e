"""Deleting executions: one by one (``delete``), by rule (``prune``), and by retention settings.

The database chooses what a prune deletes (``prune_batch``, by end time over
an index of the finished executions), a batch at a time, so a prune of a large
store reads its victims, not the store. Only finished executions are ever
deleted; queued and running ones survive every prune (the store re-checks the
status in the deleting statement, so a claim racing a prune wins). Deletion
runs in batches, each one short transaction (its size adapts so that it holds the write lock about
:data:`BATCH_SECONDS`) that removes the rows and their chunks together (an
execution is whole or gone, never half-deleted), with a pause as long as the
batch between two, so that captures committing meanwhile get the lock;
segment files go after each commit, and the freed space is handed back to the
filesystem at the end (:meth:`Store.reclaim`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from outspool import queue
from outspool.errors import InvalidStateError
from outspool.follow import wait_for
from outspool.models import Status
from outspool.settings import Settings
from outspool.store.base import Finished, Store

#: Executions deleted by the first transaction. A batch aims to hold the write lock about
#: BATCH_SECONDS: the next one is half as large after a batch twice as long, twice as large
#: (up to MAX_BATCH) after one half as long, so a capture's commit never waits long.
BATCH = 20
BATCH_SECONDS = 0.01
MAX_BATCH = 200
#: After each batch the deleter pauses as long as the batch took (at most this many seconds):
#: a capture waiting for SQLite's write lock polls for it ever more slowly, and would otherwise
#: find it taken by the next batch again and again.
MAX_PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class Rules:
    """What ``prune`` deletes: finished executions matching every rule given."""

    older_than: float | None = None  #: seconds since the end
    keep_last: int | None = None  #: the newest N finished executions stay
    max_size: int | None = None  #: oldest first, until the kept output fits in this many bytes
    statuses: frozenset[Status] = frozenset()  #: only these (empty: any finished status)

    @property
    def empty(self) -> bool:
        return (
            self.older_than is None
            and self.keep_last is None
            and self.max_size is None
            and not self.statuses
        )

    @classmethod
    def retention(cls, settings: Settings) -> Rules:
        return cls(
            older_than=settings.retention_max_age,
            keep_last=settings.retention_keep_last,
            max_size=settings.retention_max_size,
        )


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune removed (or would remove, with ``dry_run``)."""

    ids: list[str] = field(default_factory=list)
    bytes: int = 0  #: output bytes those executions kept
    dry_run: bool = False

    @property
    def count(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "bytes": self.bytes, "dry_run": self.dry_run, "ids": self.ids}


def prune(store: Store, rules: Rules, *, dry_run: bool = False, now: float | None = None) -> Pruned:
    """Delete the finished executions ``rules`` choose, in batches; what was removed.

    The database chooses (:meth:`Store.prunable`, oldest end first, one batch at
    a time), so a prune reads its victims and not the whole store.
    """
    pace = _Pace()
    ids: list[str] = []
    removed = 0
    when = time.time() if now is None else now
    for batch in _victims(store, rules, when, lambda: MAX_BATCH if dry_run else pace.size):
        kept = {f.execution_id: f.kept for f in batch}
        gone = list(kept) if dry_run else pace.delete(store, list(kept))
        ids += gone
        removed += sum(kept[i] for i in gone)
    if not dry_run:
        store.reclaim()  # also when nothing was deleted: it sweeps files a crash left behind
    return Pruned(ids, removed, dry_run)


def _victims(
    store: Store, rules: Rules, now: float, size: Callable[[], int]
) -> Iterator[list[Finished]]:
    """The executions ``rules`` delete, oldest end first, in batches of ``size()``.

    ``keep_last`` and ``older_than`` bound the range of end times; ``statuses``
    filters it; ``max_size`` takes the oldest of what remains until the rest fits.
    """
    if rules.empty:
        return
    upto = (math.inf, "")
    if rules.older_than is not None:  # ended at most older_than ago: strictly before the next
        upto = (math.nextafter(now - rules.older_than, math.inf), "")
    if rules.keep_last:
        keep = store.keep_from(rules.keep_last)
        if keep is None:
            return  # no more than keep_last have finished
        upto = min(upto, keep)
    excess = None if rules.max_size is None else store.stored_output() - rules.max_size
    after = (-math.inf, "")
    statuses = sorted(rules.statuses)
    while excess is None or excess > 0:
        limit = size()
        batch = store.prunable(after, upto, statuses, excess, limit)
        if not batch:
            return
        yield batch
        if excess is not None:
            excess -= sum(f.kept for f in batch)
        if len(batch) < limit:
            return
        after = (batch[-1].ended_at, batch[-1].execution_id)


class _Pace:
    """Batches that hold the write lock about BATCH_SECONDS, a pause as long between two."""

    def __init__(self) -> None:
        self.size = BATCH
        self._pause: float | None = None  # None before the first batch

    def delete(self, store: Store, ids: list[str]) -> list[str]:
        if self._pause is not None:
            time.sleep(self._pause)
        began = time.monotonic()
        gone = store.delete(ids)
        took = time.monotonic() - began
        if took > 2 * BATCH_SECONDS:
            self.size = max(1, self.size // 2)
        elif took < BATCH_SECONDS / 2:
            self.size = min(MAX_BATCH, self.size * 2)
        self._pause = min(took, MAX_PAUSE)
        return gone


def delete(store: Store, execution_ids: Iterable[str]) -> list[str]:
    """Delete finished executions in batches, then reclaim the space; those deleted."""
    ids = list(execution_ids)
    pace = _Pace()
    gone: list[str] = []
    start = 0
    while start < len(ids):
        size = pace.size
        gone += pace.delete(store, ids[start : start + size])
        start += size
    store.reclaim()  # also when nothing was deleted: it sweeps files a crash left behind
    return gone


def remove(store: Store, settings: Settings, execution_id: str, *, force: bool = False) -> str:
    """Delete one execution (``force``: cancel a queued or running one and wait for its end).

    Returns its full ID. A queued or running one is refused without ``force``.
    """
    ex = store.get(execution_id)
    if not ex.status.finished:
        if not force:
            raise InvalidStateError(
                f"execution {ex.id} is {ex.status.value}: cancel it first, or use --force"
            )
        queue.cancel(store, ex.id, "cancelled to be deleted")
        timeout = settings.kill_grace + settings.heartbeat_timeout + 10
        try:
            wait_for(store, ex.id, timeout, lost_after=settings.heartbeat_timeout)
        except TimeoutError:
            raise InvalidStateError(f"execution {ex.id} did not stop in {timeout:.0f} s") from None
    if not delete(store, [ex.id]):
        raise InvalidStateError(f"execution {ex.id} could not be deleted: it is running")
    return ex.id


class Retention:
    """Applies the retention settings every ``retention_interval`` (worker, serve)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.rules = Rules.retention(settings)
        self.interval = settings.retention_interval
        self._next = 0.0

    @property
    def enabled(self) -> bool:
        return not self.rules.empty

    def due(self, now: float) -> bool:
        return self.enabled and now >= self._next

    def apply(self, now: float) -> Pruned:
        """Prune by the settings now; the next run is ``retention_interval`` later."""
        self._next = now + self.interval
        return prune(self.store, self.rules)
