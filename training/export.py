"""Export the whole K-step sampler as one ONNX graph plus a manifest (docs/architecture.md, "Artifact").

Inputs `state` [B, S] (raw) and `noise` [B, A]; output `action` [B, A] in env units. Normalisation, the
unrolled solver steps and action scaling/clipping are inside the graph. Best-of-N selection (the critic
is exported in the same graph) extends the contract to noise [B, N·A], N candidate noises per state,
candidate-major within a row; the manifest's training_config records action_selection and best_of_n.
A chunked policy (action horizon H > 1) answers `action` [B, H, A] from noise [B, H·A] and takes three more
inputs for inpainting: `prefix` [B, H, A] (the previous chunk's remaining actions, env units, index 0 = the
next action to execute), `committed` [B] and `prefix_len` [B] (float counts d ≤ L ≤ H; L = 0: no prefix);
the manifest records `action_horizon`, `control_period_s` and `inpainting` (replace | soft). H = 1 graphs
are exported exactly as before chunks.
Export is refused unless the artifact, loaded back as the server loads it, matches torch within `atol` at
batch 1, 7 and 256 (and, for chunks, with a random prefix too).
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qipo_client.chunking import InpaintingPolicy
from qipo_client.policy import Policy

from service.artifact import POLICY_FILE, ArtifactError, Manifest, SolverSpec, file_entry, write_manifest
from service.runtime import OnnxPolicy
from training.policy import FlowPolicy, Inpainting

OPSET = 17
PARITY_BATCHES = (1, 7, 256)


class ExportError(RuntimeError):
    pass


def model_name_for(dataset: dict[str, Any], run: Path) -> str:
    """The default registry name of a model: its dataset's name as a slug, without a version suffix
    (`reacher-mixed.hdf5` → `reacher-mixed`, Minari `mujoco/hopper/medium-v0` → `mujoco-hopper-medium`);
    the run directory's name when the run records no dataset."""
    raw = str(dataset.get("name") or run.resolve().name)
    slug = re.sub(r"[^a-z0-9._-]+", "-", raw.lower())
    slug = re.sub(r"-v\d+$", "", slug).strip("-._")
    return slug or "policy"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def export_onnx(policy: FlowPolicy, path: Path) -> Path:
    example: tuple[torch.Tensor, ...] = (
        torch.zeros(2, policy.normalizer.obs_dim),
        torch.zeros(2, policy.noise_dim),
    )
    names = ["state", "noise"]
    if policy.horizon > 1:  # the inpainting inputs (values are irrelevant to the trace: no branch on them)
        example += (torch.zeros(2, policy.horizon, policy.normalizer.act_dim), torch.ones(2), torch.ones(2))
        names += ["prefix", "committed", "prefix_len"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            policy.eval(),
            example,
            str(path),
            input_names=names,
            output_names=["action"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "action"]},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def control_period(env_id: str | None) -> float | None:
    """Seconds per step of a gymnasium env (`env.unwrapped.dt`, e.g. Pendulum 0.05, Hopper 0.008), or None
    when the env is unknown, cannot be made here, or does not say."""
    if not env_id:
        return None
    try:
        import gymnasium as gym

        env = gym.make(env_id)
    except Exception:  # no gymnasium, no such env, or its simulator is not installed
        return None
    try:
        dt = getattr(env.unwrapped, "dt", None)
    finally:
        env.close()
    return float(dt) if isinstance(dt, int | float) and dt > 0 else None


def parity_error(policy: FlowPolicy, exported: Policy, batches: tuple[int, ...] = PARITY_BATCHES) -> float:
    """Max |exported − torch| over random raw states (dataset scale) and the same noise, at several batch
    sizes; both sides are called through the `Policy` contract, as evaluation and serving call them."""
    norm = policy.normalizer
    rng = np.random.default_rng(123)
    worst = 0.0
    for b in batches:
        z = rng.standard_normal((b, norm.obs_mean.shape[0])).astype(np.float32)
        state = (z * norm.obs_std.numpy() + norm.obs_mean.numpy()).astype(np.float32)
        noise = rng.standard_normal((b, policy.noise_dim)).astype(np.float32)
        worst = max(worst, float(np.abs(exported.infer(state, noise) - policy.infer(state, noise)).max()))
        if policy.horizon > 1 and isinstance(exported, InpaintingPolicy):
            length = int(rng.integers(1, policy.horizon + 1))
            committed = rng.integers(0, min(length, policy.horizon - 1) + 1, size=b)
            prefix = policy.infer(state, rng.standard_normal((b, policy.noise_dim)).astype(np.float32))
            args = (state, prefix[:, :length], committed, noise)
            diff = exported.infer_inpainted(*args) - policy.infer_inpainted(*args)
            worst = max(worst, float(np.abs(diff).max()))
    return worst


def export_artifact(
    policy: FlowPolicy,
    out_dir: Path,
    *,
    name: str,
    variant: str,
    training_config: dict[str, Any],
    dataset: dict[str, Any],
    scores: dict[str, Any],
    env_id: str | None = None,
    atol: float = 1e-5,
    control_period_s: float | None = None,
    inpainting: Inpainting | None = None,
) -> Manifest:
    """Write policy.onnx and its manifest, then load them back as the server does (sha256, signature,
    bounds: `OnnxPolicy`) and refuse the export, removing both, unless it matches torch within `atol`.

    `control_period_s`: seconds per action (default: the env's dt, `control_period`); `inpainting`: how a
    chunked graph uses its prefix (default: the policy's, `DEFAULT_INPAINTING`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chunked = policy.horizon > 1
    if chunked and inpainting is not None:
        policy.inpainting = inpainting
    if control_period_s is None:
        control_period_s = control_period(env_id or dataset.get("env_id"))
    onnx_path = export_onnx(policy, out_dir / POLICY_FILE)
    norm = policy.normalizer
    manifest = Manifest(
        name=name,
        env_id=env_id,
        obs_dim=norm.obs_dim,
        act_dim=norm.act_dim,
        action_low=norm.act_low.tolist(),
        action_high=norm.act_high.tolist(),
        variant=variant,  # type: ignore[arg-type]
        solver=SolverSpec(kind=policy.path.solver, steps=policy.steps),  # type: ignore[arg-type]
        noise_dim=policy.noise_dim if policy.candidates > 1 else None,
        action_horizon=policy.horizon,
        control_period_s=control_period_s,
        inpainting=policy.inpainting if chunked else None,
        opset=OPSET,
        files={POLICY_FILE: file_entry(onnx_path)},
        dataset=dataset,
        training_config=training_config,
        scores=scores,
        git_commit=_git_commit(),
    )
    manifest_path = write_manifest(out_dir, manifest)
    try:
        err = parity_error(policy, OnnxPolicy.load(out_dir, provider="cpu"))
    except ArtifactError as exc:
        err, why = float("inf"), str(exc)
    else:
        why = (
            f"ONNX output differs from torch by {err:.2e} > atol {atol:.0e} (float32 rounding stays below "
            "1e-4; larger means a broken graph, smaller can be accepted with `qipo export --atol`)"
        )
    if not err <= atol:
        onnx_path.unlink(missing_ok=True)
        manifest_path.unlink(missing_ok=True)
        raise ExportError(f"{why}; not exported")
    manifest.export_parity_max_abs_err = err
    write_manifest(out_dir, manifest)
    return manifest
