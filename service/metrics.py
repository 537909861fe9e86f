"""Prometheus metrics (the names the dashboard and alerts use), on a registry per app so tests can build many.

The per-request series (requests, latency, batch size, queue wait, clipped, deadline misses) are plain
numbers that only the event-loop thread writes, exposed by one collector at scrape time: an observation is
a bisect and two additions, with no lock and no Python loop over the buckets. Everything written from
other threads (model loads and swaps) keeps prometheus_client's locked types. Like Prometheus' own client
defaults, the registry carries the `process_*`, `python_gc_*` and `python_info` series; no series has a
`_created` sample (it doubles the series count and nothing here reads it).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fastapi import status
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# The statuses /act answers, exported from the start at 0 so a rate over them is defined before the first.
ACT_STATUSES = (
    status.HTTP_200_OK,
    status.HTTP_409_CONFLICT,
    status.HTTP_413_CONTENT_TOO_LARGE,
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    status.HTTP_422_UNPROCESSABLE_CONTENT,
    status.HTTP_503_SERVICE_UNAVAILABLE,
    status.HTTP_504_GATEWAY_TIMEOUT,
)

# Process-wide: the loop-written families below must not emit `_created` samples either.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client


class LoopHistogram:
    """A cumulative histogram written by the event-loop thread only."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = (*(float(b) for b in buckets), math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # `le` buckets: first bound ≥ value
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]  # unannotated upstream
        return HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=self.sum)


class LoopCounter:
    """A counter written by the event-loop thread only (`value` is read by tests and the scrape)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, value=self.value)


class _LoopCollector:
    """Hands the loop-owned series to prometheus_client at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily("qipo_act_requests", "Act requests by HTTP status", labels=["status"])
        for code, count in sorted(m.requests.items()):
            requests.add_metric([str(code)], count)
        yield requests
        yield m.latency.family()
        yield m.batch_size.family()
        yield m.queue_wait.family()
        yield m.clipped.family()
        yield m.deadline_exceeded.family()


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        # HTTP status -> answers (see `count`); the statuses /act answers are exported from the start at 0.
        self.requests: dict[int, int] = dict.fromkeys(ACT_STATUSES, 0)
        self.latency = LoopHistogram("qipo_act_latency_seconds", "End-to-end /act latency", LATENCY_BUCKETS)
        self.batch_size = LoopHistogram("qipo_batch_size", "Rows per ONNX call", BATCH_BUCKETS)
        self.queue_wait = LoopHistogram(
            "qipo_queue_wait_seconds", "Time waiting for a batch slot", LATENCY_BUCKETS
        )
        self.clipped = LoopCounter("qipo_actions_clipped", "Actions at or beyond the bounds")
        self.deadline_exceeded = LoopCounter("qipo_deadline_exceeded", "Requests answered 504 (deadline)")
        r.register(_LoopCollector(self))
        self.model_info = Gauge("qipo_model_info", "Model being served (1)", ["name", "version"], registry=r)
        self.model_swaps = Counter("qipo_model_swaps", "Model loads by result", ["result"], registry=r)
        self.model_load = Histogram(
            "qipo_model_load_seconds", "Pull + verify + load + warm-up time", registry=r
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def count(self, status: int, seconds: float) -> None:
        """One answered /act request: its status and end-to-end latency."""
        self.requests[status] = self.requests.get(status, 0) + 1
        self.latency.observe(seconds)
