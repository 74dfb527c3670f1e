"""Scale scenarios (issue 13): how cost grows with the store, the programs, the watchers.

Each scenario module has ``run(full: bool) -> Section``; :data:`bench.sections.SCENARIOS`
lists them, and ``python -m bench`` runs them after the throughput scenarios.
"""
