"""The model alone: the fused ONNX sampler (what `/act` runs per batch) timed against torch eager, and the
benchmark's artifacts. torch is imported only inside the functions that build or time the torch policy."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from loadtests.floor import MODEL

SAMPLER_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # ONNX: the overhead column interpolates between them
TORCH_BATCHES = (1, 64, 256)


class Arch(NamedTuple):
    """A benchmark network: width, residual blocks, Euler steps, and actions per reply (H)."""

    hidden: int
    blocks: int
    steps: int
    horizon: int = 1


ARCHS = {
    "default": Arch(128, 2, 10),  # QIPOConfig defaults (NetworkConfig hidden/blocks, 10 Euler steps)
    "small": Arch(64, 2, 10),  # ~4x cheaper per row than default: shows the serving overhead itself
    "chunk8": Arch(128, 2, 10, horizon=8),  # default's network over H = 8 actions: one reply, 8 actions
}


def build_artifact(out: Path, arch: Arch) -> Any:
    """Export an untrained Pendulum-shaped flow policy (seed 0) of `arch` to `out`; returns it (torch)."""
    import torch

    from training.export import export_artifact
    from training.networks import VelocityNet
    from training.paths import make_path
    from training.policy import FlowPolicy, Normalizer

    torch.manual_seed(0)
    norm = Normalizer(np.zeros(3), np.ones(3), np.array([-2.0]), np.array([2.0]))
    net = VelocityNet(3, arch.horizon, arch.hidden, arch.blocks, 32)
    policy = FlowPolicy(net, norm, make_path("qipo-ot"), arch.steps, horizon=arch.horizon).eval()
    export_artifact(
        policy, out, name=MODEL, variant="qipo-ot", training_config={}, dataset={"name": "bench"}, scores={}
    )
    return policy


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU ms of this thread per call: like the server's CPU µs/req, it does not grow when other
    jobs take the CPU away (wall time would, and the overhead column subtracts this from CPU time)."""
    for _ in range(max(3, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        fn()
        samples.append(time.thread_time_ns() - t0)
    return statistics.median(samples) / 1e6


def bench_sampler(
    policy: Any, artifact: Path, batches: tuple[int, ...] = SAMPLER_BATCHES, torch_too: bool = True
) -> list[dict[str, Any]]:
    """ONNX ms per call at each batch (`OnnxPolicy.run`, the graph alone, 1 thread) and, at TORCH_BATCHES,
    torch eager's and the speed-up."""
    import torch

    from service.runtime import OnnxPolicy

    torch.set_num_threads(1)
    onnx = OnnxPolicy.load(artifact, intra_threads=1)
    rows = []
    for batch in batches:
        rng = np.random.default_rng(batch)
        state = rng.standard_normal((batch, 3), dtype=np.float32)
        noise = rng.standard_normal((batch, policy.noise_dim), dtype=np.float32)
        ts, tn = torch.from_numpy(state), torch.from_numpy(noise)
        repeats = 300 if batch == 1 else 40

        def eager(ts: Any = ts, tn: Any = tn) -> None:
            with torch.inference_mode():
                policy(ts, tn)

        def graph(s: np.ndarray = state, n: np.ndarray = noise) -> object:
            return onnx.run(s, n)  # the graph alone

        onnx_ms = time_call(graph, repeats)
        row: dict[str, Any] = {"batch": batch, "onnx_ms": onnx_ms}
        if torch_too and batch in TORCH_BATCHES:
            torch_ms = time_call(eager, repeats)
            row |= {"torch_eager_ms": torch_ms, "speedup": torch_ms / onnx_ms}
        rows.append(row)
    return rows


def sampler_us_per_row(rows: list[dict[str, Any]], mean_batch: float) -> float:
    """The sampler's µs per row at a (fractional) mean batch, interpolated between measured batches."""
    ms = float(np.interp(mean_batch, [r["batch"] for r in rows], [r["onnx_ms"] for r in rows]))
    return ms * 1e3 / mean_batch
