"""compile_pattern from many threads at once leaves the warnings filters as they were."""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator

import pytest

from outspool.search import compile_pattern


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads switch every microsecond: a race between them shows in a few thousand calls."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_compile_pattern_in_threads_keeps_the_warnings_filters(switching_often: None) -> None:
    """``warnings.catch_warnings`` saves and restores the process's one list of filters:
    two threads in it at once could restore each other's, leaving FutureWarnings ignored
    everywhere (or, the other way round, raised by the next pattern compiled)."""
    filters = list(warnings.filters)
    start = threading.Barrier(8)

    def compile_many(n: int) -> None:
        start.wait()
        for i in range(3000):
            compile_pattern(f"[[a]]{n}-{i % 50}")  # flagged by Python: "possible nested set"

    threads = [threading.Thread(target=compile_many, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == filters
