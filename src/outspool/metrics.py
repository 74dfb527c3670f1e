"""Prometheus metrics (``GET /metrics``, ``outspool worker --metrics-port``).

Needs the web extra (``prometheus_client``). A collector reads, at each scrape,
the store's totals (executions by status, queue depth, running, lost, bytes
captured and stored) and this process's writer counters (commit latency,
pending bytes, retries), so nothing is counted twice and nothing is kept in
the database for it. The store's totals scan the chunk rows' sizes, so they are
cached for ``STORE_TTL`` seconds between scrapes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from outspool.client import Outspool
from outspool.models import Status
from outspool.store.base import StoreStats
from outspool.writer import COMMIT_BUCKETS, Writer

STORE_TTL = 5.0


class OutspoolCollector(Collector):
    """Builds every metric at scrape time."""

    def __init__(self, spool: Outspool) -> None:
        self._spool = spool
        self._lock = threading.Lock()
        self._cached: tuple[float, StoreStats] | None = None

    def collect(self) -> Iterable[Metric]:
        yield from self._store_metrics(self._stats())
        writer = self._spool.started_writer
        if writer is not None:
            yield from _writer_metrics(writer)

    def _stats(self) -> StoreStats:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > STORE_TTL:
                self._cached = (now, self._spool.store.stats())
            return self._cached[1]

    def _store_metrics(self, stats: StoreStats) -> Iterable[Metric]:
        by_status = GaugeMetricFamily(
            "outspool_executions", "Executions in the store, by status.", labels=["status"]
        )
        for status in Status:
            by_status.add_metric([status.value], stats.executions.get(status, 0))
        yield by_status
        yield _gauge(
            "outspool_queue_depth",
            "Executions queued, waiting for a worker.",
            stats.executions.get(Status.QUEUED, 0),
        )
        yield _gauge(
            "outspool_running_executions",
            "Executions running now.",
            stats.executions.get(Status.RUNNING, 0),
        )
        yield _gauge(
            "outspool_lost_executions",
            "Executions whose capturing process died (output kept).",
            stats.executions.get(Status.LOST, 0),
        )
        yield _gauge(
            "outspool_captured_bytes",
            "Bytes the stored executions printed (stdout + stderr).",
            sum(stats.captured_bytes.values()),
        )
        yield _gauge(
            "outspool_stored_bytes",
            "Bytes their output takes as stored, after compression.",
            stats.stored_bytes,
        )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _writer_metrics(writer: Writer) -> Iterable[Metric]:
    stats = writer.stats
    yield CounterMetricFamily(
        "outspool_writer_captured_bytes",
        "Bytes this process captured and committed.",
        value=stats.raw_bytes,
    )
    yield CounterMetricFamily(
        "outspool_writer_stored_bytes",
        "Bytes this process committed, as stored (after compression).",
        value=stats.stored_bytes,
    )
    yield CounterMetricFamily(
        "outspool_writer_retries", "Failed commits retried (output held).", value=stats.retries
    )
    yield _gauge(
        "outspool_writer_pending_bytes",
        "Output read but not committed yet.",
        writer.pending_bytes,
    )
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*COMMIT_BUCKETS, float("inf")], stats.commit_buckets, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    yield HistogramMetricFamily(
        "outspool_commit_seconds",
        "Time a group commit of output took.",
        buckets=buckets,
        sum_value=stats.commit_seconds,
    )


def registry(spool: Outspool) -> CollectorRegistry:
    """A registry with outspool's metrics only, for the store and writer of ``spool``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(OutspoolCollector(spool))
    return reg


def serve_metrics(spool: Outspool, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` for ``spool`` on ``host:port`` from a daemon thread (workers)."""
    start_http_server(port, addr=host, registry=registry(spool))
