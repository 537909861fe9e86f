"""The sampler on ONNX Runtime's CUDA provider as captured CUDA graphs, one per batch bucket.

Why: the fused K-step sampler is about a hundred small kernels. On an H200 a plain CUDA call of it costs
~1.5 ms at any batch up to ~1,000 rows (launches, plus IO binding's per-call allocations), ten times what one
CPU core needs at batch 1 (docs/gpu.md). A CUDA graph replays the whole launch sequence at once into buffers
bound once. ORT captures one graph per session, at fixed shapes and fixed buffer addresses, so each bucket
gets its own session with the batch dimension pinned (free-dimension override) and its inputs and output
bound at load; a call copies its rows into the smallest bucket that holds them, zero-padded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)
BUCKETS = (1, 4, 16, 64, 256)  # rows; a call larger than the largest runs without a graph
CAPTURE_RUNS = 3  # ORT runs a session normally before it captures (allocations must settle first)


def bucket_for(rows: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket that holds `rows`, or None when none does."""
    return next((b for b in buckets if b >= rows), None)


@dataclass
class _Slot:
    session: ort.InferenceSession
    binding: ort.IOBinding
    state: ort.OrtValue
    noise: ort.OrtValue
    action: ort.OrtValue
    state_host: np.ndarray  # zero-padded staging rows, reused
    noise_host: np.ndarray


class CudaGraphSampler:
    """`run(state[B,S], noise[B,N]) -> action[B,A]` for B up to the largest bucket, on captured graphs."""

    def __init__(self, model: Path, obs_dim: int, noise_dim: int, act_dim: int, largest: int = 256) -> None:
        self.buckets = (*(b for b in BUCKETS if b < largest), largest)
        self._dims = (obs_dim, noise_dim, act_dim)
        self._slots = {b: self._capture(model, b) for b in self.buckets}

    @property
    def largest(self) -> int:
        return self.buckets[-1]

    def _capture(self, model: Path, rows: int) -> _Slot:
        obs_dim, noise_dim, act_dim = self._dims
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_free_dimension_override_by_name("batch", rows)
        session = ort.InferenceSession(
            str(model),
            sess_options=options,
            providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})],
        )
        state_host = np.zeros((rows, obs_dim), dtype=np.float32)
        noise_host = np.zeros((rows, noise_dim), dtype=np.float32)
        state = ort.OrtValue.ortvalue_from_numpy(state_host, "cuda", 0)
        noise = ort.OrtValue.ortvalue_from_numpy(noise_host, "cuda", 0)
        action = ort.OrtValue.ortvalue_from_shape_and_type([rows, act_dim], np.float32, "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input("state", state)
        binding.bind_ortvalue_input("noise", noise)
        binding.bind_ortvalue_output("action", action)
        for _ in range(CAPTURE_RUNS):
            session.run_with_iobinding(binding)
        return _Slot(session, binding, state, noise, action, state_host, noise_host)

    def run(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        rows = len(state)
        bucket = bucket_for(rows, self.buckets)
        if bucket is None:
            raise ValueError(f"{rows} rows exceed the largest captured bucket ({self.largest})")
        slot = self._slots[bucket]
        slot.state_host[:rows] = state
        slot.state_host[rows:] = 0.0
        slot.noise_host[:rows] = noise
        slot.noise_host[rows:] = 0.0
        slot.state.update_inplace(slot.state_host)
        slot.noise.update_inplace(slot.noise_host)
        slot.session.run_with_iobinding(slot.binding)
        slot.binding.synchronize_outputs()
        return np.array(slot.action.numpy()[:rows], dtype=np.float32)


def try_capture(
    model: Path, obs_dim: int, noise_dim: int, act_dim: int, largest: int
) -> CudaGraphSampler | None:
    """A `CudaGraphSampler`, or None (plain CUDA calls) when this model or onnxruntime cannot be captured,
    e.g. a node that only the CPU provider runs; the reason is logged."""
    try:
        return CudaGraphSampler(model, obs_dim, noise_dim, act_dim, largest)
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        log.warning("CUDA graphs unavailable for %s (%s); serving with plain CUDA calls", model, exc)
        return None
