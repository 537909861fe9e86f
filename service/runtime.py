"""ONNX Runtime session for one verified artifact (CUDA graph capture lives in `service.cuda_graphs`).

`OnnxPolicy` is the `Policy` (qipo_client.policy) the server, `qipo eval ARTIFACT` and export checks run:
it loads only after every file's sha256 matches the manifest, and `infer` is the graph plus the bounds
guarantee. `run` is the graph alone (what the benchmark times as the sampler).

On the CPU provider `run` calls the session's compiled `run` (`InferenceSession._sess.run`) without the
Python wrapper around it: the wrapper re-checks, per call, that the feed names every input, that no OrtValue
belongs to another session and that WebGPU graph capture is off, and retries on another provider after an
EP failure. The feed here is always the same two float32 arrays that `_check_signature` matched at load,
and the CPU provider has nothing to fall back to, so those checks cost ~10 µs per call for nothing. Load
verifies the direct call gives the wrapper's answer and otherwise keeps the wrapper.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from qipo_client.chunking import prefix_inputs
from qipo_client.policy import as_states, resolve_noise

from service.artifact import POLICY_FILE, ArtifactError, Manifest, verify_artifact
from service.cuda_graphs import CudaGraphSampler, try_capture
from service.policy import Bounds, Noise, PolicyMetadata
from service.settings import Provider

log = logging.getLogger(__name__)
_OUTPUTS = ["action"]
# A chunked graph's inpainting inputs (training/policy.py, FlowPolicy): prefix [B, H, A], committed [B] and
# prefix_len [B] (float counts); zeros ask for a chunk without a prefix.
PREFIX_INPUTS = ("prefix", "committed", "prefix_len")


def choose_providers(choice: Provider = "auto") -> list[str]:
    """`auto`: CUDA when this onnxruntime build and machine offer it, else CPU; `cpu`; `cuda`, or an
    ArtifactError that says how to get it (a GPU replica must not quietly serve from its CPU)."""
    available = ort.get_available_providers()
    if choice not in ("auto", "cpu", "cuda"):
        raise ArtifactError(f"unknown ONNX Runtime provider {choice!r}; choose auto, cpu or cuda")
    if choice == "cuda" and "CUDAExecutionProvider" not in available:
        raise ArtifactError(
            f"QIPO_ORT_PROVIDER=cuda, but this onnxruntime offers only {available}; install the `gpu` extra "
            "(onnxruntime-gpu) on a machine with an NVIDIA driver, or set QIPO_ORT_PROVIDER=auto"
        )
    if choice != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(eq=False)
class OnnxPolicy:
    """A loaded fused sampler: `infer(state [B,S], noise [B,N]) -> action [B,A]` in env units, in bounds."""

    manifest: Manifest
    session: ort.InferenceSession
    bounds: Bounds
    load_seconds: float
    metadata: PolicyMetadata
    io_binding: bool = False  # CUDA: bind inputs/outputs explicitly instead of letting run() copy twice
    graphs: CudaGraphSampler | None = None  # CUDA + `cuda_graph`: captured graphs for batches up to a bucket
    # (output names, feed, run options) -> outputs: the session's `run`, or its compiled core (see above)
    _run: Callable[[list[str], dict[str, np.ndarray], Any], Sequence[Any]] | None = field(
        default=None, repr=False
    )
    # Noise for `infer(states)` without any: a caller that wants reproducible noise passes Seeds.
    _rng: np.random.Generator = field(default_factory=np.random.default_rng, repr=False)

    @classmethod
    def load(
        cls,
        artifact_dir: Path,
        intra_threads: int = 1,
        inter_threads: int = 1,
        provider: Provider = "auto",
        cuda_graph: bool = False,
        graph_rows: int = 256,
    ) -> OnnxPolicy:
        """`cuda_graph` (CUDA only): also capture the sampler as CUDA graphs for batches up to `graph_rows`
        (service/cuda_graphs.py); larger batches, and any model that cannot be captured, run plainly."""
        start = time.perf_counter()
        manifest = verify_artifact(artifact_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = inter_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(provider)
        try:
            session = ort.InferenceSession(
                str(artifact_dir / POLICY_FILE), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ArtifactError(f"onnxruntime cannot load {artifact_dir / POLICY_FILE}: {exc}") from exc
        if provider == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU when the CUDA provider's libraries (cuBLAS, cuDNN) do not load
            raise ArtifactError(
                f"QIPO_ORT_PROVIDER=cuda, but the session runs on {session.get_providers()}: the CUDA "
                "provider did not load (see onnxruntime's log above for the missing library)"
            )
        _check_signature(session, manifest)
        policy = cls(
            manifest=manifest,
            session=session,
            bounds=Bounds(np.asarray(manifest.action_low), np.asarray(manifest.action_high)),
            load_seconds=0.0,
            metadata=metadata_of(manifest),
            io_binding=session.get_providers()[0] == "CUDAExecutionProvider",
        )
        policy._run = None if policy.io_binding else _direct_run(session, manifest)
        if policy.io_binding and cuda_graph and manifest.action_horizon == 1:
            policy.graphs = try_capture(
                artifact_dir / POLICY_FILE,
                manifest.obs_dim,
                manifest.noise_width,
                manifest.act_dim,
                graph_rows,
            )
        policy.load_seconds = time.perf_counter() - start
        return policy

    @property
    def obs_dim(self) -> int:
        return self.manifest.obs_dim

    @property
    def act_dim(self) -> int:
        return self.manifest.act_dim

    @property
    def noise_dim(self) -> int:
        return self.manifest.noise_width

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        """Actions [B, A] (chunks [B, H, A] for H > 1) inside the manifest's bounds (the `Policy`
        contract). The batcher passes float32 arrays of the right shapes (ONNX Runtime checks them);
        anything else is converted first."""
        if type(noise) is not np.ndarray or type(states) is not np.ndarray:
            states = as_states(states, self.obs_dim)
            noise = resolve_noise(noise, len(states), self.noise_dim, self._rng)
        return self._clamp(self.run(states, noise))

    def infer_inpainted(
        self, states: np.ndarray, prefix: np.ndarray, committed: Any, noise: Noise = None
    ) -> np.ndarray:
        """Chunks [B, H, A] inpainted toward `prefix` [B, L, A] (qipo_client.chunking.InpaintingPolicy)."""
        horizon = self.manifest.action_horizon
        if horizon == 1:
            raise ValueError("inpainting needs a chunked policy (action_horizon > 1)")
        states = as_states(states, self.obs_dim)
        noise = resolve_noise(noise, len(states), self.noise_dim, self._rng)
        extra = prefix_inputs(prefix, committed, len(states), horizon, self.act_dim)
        return self._clamp(self.run(states, noise, dict(zip(PREFIX_INPUTS, extra, strict=True))))

    def infer_prefixed(
        self,
        states: np.ndarray,
        noise: np.ndarray,
        prefix: np.ndarray,
        committed: np.ndarray,
        prefix_len: np.ndarray,
    ) -> np.ndarray:
        """Chunks [B, H, A] from the graph's inpainting inputs as they are, one (d, L) per row (the
        micro-batcher's call; `service.policy.PrefixPolicy`), inside the bounds."""
        feed = dict(zip(PREFIX_INPUTS, (prefix, committed, prefix_len), strict=True))
        return self._clamp(self.run(states, noise, feed))

    def _clamp(self, actions: np.ndarray) -> np.ndarray:
        """Bounds per action: a chunk [B, H, A] is clamped as B·H actions."""
        if actions.ndim == 2:
            return self.bounds.clamp(actions)
        return self.bounds.clamp(actions.reshape(-1, self.act_dim)).reshape(actions.shape)

    def reset(self) -> None:
        """Stateless: every call stands alone."""

    def run(
        self, state: np.ndarray, noise: np.ndarray, prefix: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The graph's raw output [B, A] ([B, H, A] for H > 1) float32 (a fresh array the caller may
        modify). `prefix`: a chunked graph's inpainting inputs (`PREFIX_INPUTS`); zeros when None."""
        if self.graphs is not None and len(state) <= self.graphs.largest:
            return self.graphs.run(state, noise)
        feed = {"state": state, "noise": noise}
        if self.manifest.action_horizon > 1:
            feed.update(prefix or _no_prefix(self.manifest, len(state)))
        if self.io_binding:
            return self._act_bound(feed)
        run = self._run or self.session.run
        (action,) = run(_OUTPUTS, feed, None)
        out: np.ndarray = action if action.dtype == np.float32 else action.astype(np.float32)
        return out

    def _act_bound(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """GPU path: one host→device copy per input, output allocated on the device and copied back once."""
        binding = self.session.io_binding()
        for name, value in feed.items():
            device = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(value, dtype=np.float32), "cuda", 0
            )
            binding.bind_ortvalue_input(name, device)
        binding.bind_output("action", "cuda")
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def warmup(self, batches: int, sizes: tuple[int, ...] = (1, 8, 64, 256)) -> None:
        """Run a few batches so the first robot does not pay for lazy allocation."""
        rng = np.random.default_rng(0)
        for _ in range(batches):
            for size in sizes:
                state = rng.standard_normal((size, self.obs_dim), dtype=np.float32)
                noise = rng.standard_normal((size, self.noise_dim), dtype=np.float32)
                action = self.run(state, noise)
                if action.shape != (size, *_action_shape(self.manifest)) or not np.isfinite(action).all():
                    raise ArtifactError(f"warm-up produced a bad action of shape {action.shape}")


def metadata_of(manifest: Manifest, version: int | None = None) -> PolicyMetadata:
    """A manifest as the contract's `PolicyMetadata`."""
    return PolicyMetadata(
        name=manifest.name,
        version=version,
        obs_dim=manifest.obs_dim,
        act_dim=manifest.act_dim,
        noise_dim=manifest.noise_width,
        action_low=tuple(manifest.action_low),
        action_high=tuple(manifest.action_high),
        env_id=manifest.env_id or manifest.dataset.get("env_id"),
        action_horizon=manifest.action_horizon,
        control_period_s=manifest.control_period_s,
    )


def _action_shape(manifest: Manifest) -> tuple[int, ...]:
    """One state's output: (A,), or (H, A) for a chunked policy."""
    if manifest.action_horizon == 1:
        return (manifest.act_dim,)
    return (manifest.action_horizon, manifest.act_dim)


def _no_prefix(manifest: Manifest, rows: int) -> dict[str, np.ndarray]:
    """The inpainting inputs that ask for no inpainting (prefix_len 0)."""
    return {
        "prefix": np.zeros((rows, manifest.action_horizon, manifest.act_dim), dtype=np.float32),
        "committed": np.zeros(rows, dtype=np.float32),
        "prefix_len": np.zeros(rows, dtype=np.float32),
    }


def _direct_run(
    session: ort.InferenceSession, manifest: Manifest
) -> Callable[[list[str], dict[str, np.ndarray], Any], Sequence[Any]] | None:
    """The compiled `run` under the session's Python wrapper, if this onnxruntime has one that answers a
    probe batch exactly as the wrapper does; None (use the wrapper) otherwise."""
    direct = getattr(getattr(session, "_sess", None), "run", None)
    if direct is None or session.get_providers()[0] != "CPUExecutionProvider":
        return None
    rng = np.random.default_rng(0)
    feed = {
        "state": rng.standard_normal((2, manifest.obs_dim), dtype=np.float32),
        "noise": rng.standard_normal((2, manifest.noise_width), dtype=np.float32),
    }
    if manifest.action_horizon > 1:
        feed.update(_no_prefix(manifest, 2))
    try:
        (fast,) = direct(_OUTPUTS, feed, None)
    except Exception:  # a changed private API: keep the public one
        log.warning("onnxruntime's compiled run is not callable as expected; using InferenceSession.run")
        return None
    (slow,) = session.run(_OUTPUTS, feed)
    return direct if np.array_equal(np.asarray(fast), slow) else None


def _check_signature(session: ort.InferenceSession, manifest: Manifest) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    expected: dict[str, tuple[int, ...]] = {"state": (manifest.obs_dim,), "noise": (manifest.noise_width,)}
    if manifest.action_horizon > 1:
        expected |= {"prefix": _action_shape(manifest), "committed": (), "prefix_len": ()}
    for name, dims in expected.items():
        if name not in inputs:
            raise ArtifactError(f"policy.onnx has no input {name!r} (has {sorted(inputs)}); re-export it")
        shape = inputs[name].shape
        if len(shape) != 1 + len(dims) or tuple(shape[1:]) != dims:
            need = ", ".join(["B", *map(str, dims)])
            raise ArtifactError(f"policy.onnx input {name!r} has shape {shape}, manifest needs [{need}]")
    if "action" not in outputs:
        raise ArtifactError(f"policy.onnx has no output 'action' (has {sorted(outputs)}); re-export it")
    out_shape = outputs["action"].shape
    want = _action_shape(manifest)
    if len(out_shape) != 1 + len(want) or tuple(out_shape[1:]) != want:
        raise ArtifactError(
            f"policy.onnx output has shape {out_shape}, manifest needs [B, {', '.join(map(str, want))}]"
        )
