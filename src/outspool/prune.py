"""Deleting executions: one by one (``delete``), by rule (``prune``), and by retention settings.

Only finished executions are ever deleted; queued and running ones survive
every prune (the store re-checks the status in the deleting statement, so a
claim racing a prune wins). Deletion runs in batches, each one short
transaction (its size adapts so that it holds the write lock about
:data:`BATCH_SECONDS`) that removes the rows and their chunks together (an
execution is whole or gone, never half-deleted), with a pause as long as the
batch between two, so that captures committing meanwhile get the lock;
segment files go after each commit, and the freed space is handed back to the
filesystem at the end (:meth:`Store.reclaim`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
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


def choose(finished: Sequence[Finished], stored: int, rules: Rules, now: float) -> list[Finished]:
    """The executions ``rules`` delete, from ``finished`` (newest first) and the total ``stored``.

    Pure. The age, count and status rules narrow the candidates; ``max_size``
    then takes the oldest of them until what remains fits.
    """
    if rules.empty:
        return []
    chosen: list[Finished] = []
    for rank, ex in enumerate(finished):
        if rules.keep_last is not None and rank < rules.keep_last:
            continue
        if rules.older_than is not None and ex.ended_at > now - rules.older_than:
            continue
        if rules.statuses and ex.status not in rules.statuses:
            continue
        chosen.append(ex)
    if rules.max_size is None:
        return chosen
    excess = stored - rules.max_size
    oldest_first: list[Finished] = []
    for ex in reversed(chosen):
        if excess <= 0:
            break
        oldest_first.append(ex)
        excess -= ex.kept
    return oldest_first


def prune(store: Store, rules: Rules, *, dry_run: bool = False, now: float | None = None) -> Pruned:
    """Delete the finished executions ``rules`` choose, in batches; what was removed."""
    chosen = choose(
        store.finished(), store.stored_output(), rules, time.time() if now is None else now
    )
    if dry_run:
        return Pruned([c.execution_id for c in chosen], sum(c.kept for c in chosen), True)
    kept = {c.execution_id: c.kept for c in chosen}
    gone = delete(store, list(kept))
    return Pruned(gone, sum(kept[i] for i in gone))


def delete(store: Store, execution_ids: Iterable[str]) -> list[str]:
    """Delete finished executions in batches, then reclaim the space; those deleted."""
    ids = list(execution_ids)
    gone: list[str] = []
    size, start = BATCH, 0
    while start < len(ids):
        began = time.monotonic()
        gone += store.delete(ids[start : start + size])
        start += size
        took = time.monotonic() - began
        if took > 2 * BATCH_SECONDS:
            size = max(1, size // 2)
        elif took < BATCH_SECONDS / 2:
            size = min(MAX_BATCH, size * 2)
        if start < len(ids):
            time.sleep(min(took, MAX_PAUSE))
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
