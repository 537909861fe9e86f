"""The server's one settings object (env prefix `QIPO_`, documented in docs/serving.md#settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Choices are Literal types, so pydantic refuses anything else at start-up and mypy checks every use.
Provider = Literal["auto", "cpu", "cuda"]
Executor = Literal["inline", "thread"]


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QIPO_", env_file=".env", extra="ignore")

    registry: str = Field("./registry", description="Registry: a directory path or redis://host:port/db")
    registry_prefix: str = Field("qipo", description="Key prefix in Redis (ignored for directories)")
    model_name: str = Field(
        "pendulum-qipo",
        description="Model name to serve (`qipo serve` without it: the registry's only model)",
    )
    model_ref: str = Field("production", description="Alias or version number to serve")
    cache_dir: Path = Field(Path("./.qipo-cache"), description="Where pulled artifacts are kept")
    host: str = Field("127.0.0.1", description="Bind address")
    port: int = Field(8000, ge=0, le=65535, description="Bind port")
    ort_intra_threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads (1 is fastest here)")
    ort_inter_threads: int = Field(1, ge=1, description="ONNX Runtime inter-op threads")
    ort_provider: Provider = Field(
        "auto",
        description="ONNX Runtime provider: auto (CUDA when offered), cpu, or cuda (fail if not offered)",
    )
    ort_cuda_graph: bool = Field(
        True,
        description="CUDA provider: replay the sampler as captured CUDA graphs, one per batch bucket up to "
        "max_batch_size (docs/gpu.md)",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted request body (413 above)")
    max_batch_rows: int = Field(1024, ge=1, description="Largest `states` batch in one request")
    max_batch_size: int = Field(256, ge=1, description="Micro-batcher: most rows in one ONNX call")
    warmup_batches: int = Field(3, ge=0, description="Batches run on a new model before it serves")
    admin_token: SecretStr | None = Field(None, description="Bearer token for admin routes (unset: disabled)")
    log_level: str = Field("info", description="Log level")
    seed: int = Field(0, description="Seed of the server's noise generator (requests may pass their own)")

    # Registry following, canary and drain.
    follow_registry: bool = Field(True, description="Watch the registry and hot-swap on alias moves")
    registry_poll_seconds: float = Field(1.0, gt=0, description="Generation poll / stream block interval")
    startup_timeout_seconds: float = Field(10.0, ge=0, description="Retry the first load this long (backoff)")
    drain_seconds: float = Field(10.0, ge=0, description="Keep a replaced model while pinned robots use it")
    max_retired: int = Field(2, ge=0, description="Most replaced models kept in memory for pinned robots")
    # Micro-batching and robot safety (docs/architecture.md, "Serving hot path").
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0,
        description="Micro-batcher: wait this long to fill a batch (0: flush every loop tick)",
    )
    queue_timeout_ms: float = Field(
        default=1000.0, gt=0, description="Answer 503 to a request queued longer than this"
    )
    max_queue_rows: int = Field(
        default=4096, ge=1, description="Rows allowed to wait; beyond it /act answers 503"
    )
    batch_executor: Executor = Field(
        default="inline",
        description="Run ONNX inline on the event loop, or in one worker thread (GPU, long calls)",
    )
    drain_timeout_s: float = Field(
        default=10.0, ge=0, description="On shutdown, wait this long for in-flight requests"
    )
    gc_freeze: bool = Field(
        default=True, description="gc.freeze() after start-up (fewer GC pauses on the hot path)"
    )
    otel: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans, metrics, logs (off: its per-request probe costs ~10 µs)",
    )


def settings_table() -> str:
    """The settings table of docs/serving.md (one source for names, defaults and meanings)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in ServeSettings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `QIPO_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)
