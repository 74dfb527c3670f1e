"""The scenarios that report as sections of their own (scale, and any added later).

To add one: a module with ``run(full: bool) -> Section`` (``bench.scale.common.Section``:
a title, markdown lines, JSON data, PNG plots written to bench/results/) and a line below.
``python -m bench --only KEY`` runs just that one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.scale import growth, live_many, pgbulk, queue_rate, startup, watchers
from bench.scale.common import Section


@dataclass(frozen=True)
class Scenario:
    key: str
    run: Callable[[bool], Section]


SCENARIOS: list[Scenario] = [
    Scenario("growth", growth.run),
    Scenario("live", live_many.run),
    Scenario("watchers", watchers.run),
    Scenario("startup", startup.run),
    Scenario("queue", queue_rate.run),
    Scenario("pgbulk", pgbulk.run),
]
