"""Prometheus metrics named as docs/architecture.md lists them, one registry per app (tests build many)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("qipo_act_requests", "Act requests by HTTP status", ["status"], registry=r)
        self.latency = Histogram(
            "qipo_act_latency_seconds", "End-to-end /act latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "qipo_batch_size", "Rows per ONNX call", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "qipo_queue_wait_seconds", "Time waiting for a batch slot", buckets=LATENCY_BUCKETS, registry=r
        )
        self.clipped = Counter("qipo_actions_clipped", "Actions at or beyond the bounds", registry=r)
        self.deadline_exceeded = Counter(
            "qipo_deadline_exceeded", "Requests answered 504 (deadline)", registry=r
        )
        self.model_info = Gauge("qipo_model_info", "Model being served (1)", ["name", "version"], registry=r)
        self.model_swaps = Counter("qipo_model_swaps", "Model loads by result", ["result"], registry=r)
        self.model_load = Histogram(
            "qipo_model_load_seconds", "Pull + verify + load + warm-up time", registry=r
        )
