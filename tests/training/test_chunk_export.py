"""Chunked export: the fused sampler answers [B, H, A], takes the previous chunk's prefix and
inpaints the new chunk toward it (replacement or RTC's soft mask), and the manifest records the horizon
and the control period; the artifact runs under `ChunkedController` with a simulated delay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from qipo_client.chunking import ChunkedController, SimulatedDelay

from service.artifact import Manifest, verify_artifact
from service.runtime import OnnxPolicy
from tests.conftest import TINY_CONFIG
from training.checkpoint import policy_from_checkpoint
from training.config import QIPOConfig
from training.data import load_dataset
from training.export import export_artifact
from training.qipo import QIPOTrainer

H = 4
FEW = {"behavior_steps": 60, "critic_steps": 30, "improve_steps": 20, "renew_every": 10}
# The committed actions of an inpainted chunk against the prefix: the OT path ends exactly at them (t = 1),
# and the env-unit round trip through the unit box costs a few ulps.
COMMITTED_ATOL = 1e-5


def train_and_export(
    data: Path,
    out: Path,
    overrides: dict[str, object],
    modes: tuple[str, ...],
    few: bool = True,
    atol: float = 1e-5,
) -> Path:
    cfg = QIPOConfig.model_validate(TINY_CONFIG | (FEW if few else {}) | overrides)
    trainer = QIPOTrainer(load_dataset(data), cfg, progress=False)
    trainer.fit()
    trainer.save(out / "run")
    policy, cfg, _ = policy_from_checkpoint(out / "run")
    for mode in modes:
        export_artifact(
            policy,
            out / mode,
            name="pendulum-chunks",
            variant=cfg.variant,
            training_config=cfg.model_dump(mode="json"),
            dataset={"name": "pendulum/mixed-v0"},
            scores={},
            env_id="Pendulum-v1",
            inpainting=mode,  # type: ignore[arg-type]
            atol=atol,
        )
    return out


@pytest.fixture(scope="module")
def chunked(pendulum_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny H = 4 QIPO-OT run exported twice: `replace` and `soft` inpainting."""
    out = tmp_path_factory.mktemp("chunked")
    return train_and_export(pendulum_dataset_dir, out, {"action_horizon": H}, ("replace", "soft"))


def test_manifest_records_horizon_period_and_inpainting(chunked: Path) -> None:
    for mode in ("replace", "soft"):
        manifest = verify_artifact(chunked / mode)
        assert manifest.action_horizon == H and manifest.inpainting == mode
        assert manifest.control_period_s == pytest.approx(0.05)  # Pendulum-v1's dt
        assert manifest.noise_width == H * manifest.act_dim
        assert manifest.export_parity_max_abs_err is not None and manifest.export_parity_max_abs_err <= 1e-5
        meta = OnnxPolicy.load(chunked / mode).metadata
        assert meta.action_horizon == H and meta.control_period_s == pytest.approx(0.05)


def test_graph_signature(chunked: Path) -> None:
    session = ort.InferenceSession(str(chunked / "soft" / "policy.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape[1:] for i in session.get_inputs()}
    assert inputs == {"state": [3], "noise": [H], "prefix": [H, 1], "committed": [], "prefix_len": []}
    assert session.get_outputs()[0].shape[1:] == [H, 1]


def test_a_manifest_from_before_chunks_reads_as_one_action(tiny_artifact: Path) -> None:
    raw = json.loads((tiny_artifact / "manifest.json").read_text())
    for key in ("action_horizon", "control_period_s", "inpainting"):
        raw.pop(key, None)
    manifest = Manifest.model_validate(raw)
    assert manifest.action_horizon == 1 and manifest.control_period_s is None and manifest.noise_width == 1
    policy = OnnxPolicy.load(tiny_artifact)
    assert policy.metadata.action_horizon == 1 and policy.infer(np.zeros((2, 3), np.float32)).shape == (2, 1)


@pytest.mark.parametrize("batch", [1, 7])
def test_chunks_match_torch_and_stay_in_bounds(chunked: Path, batch: int) -> None:
    policy, _, _ = policy_from_checkpoint(chunked / "run")
    onnx = OnnxPolicy.load(chunked / "soft")
    rng = np.random.default_rng(batch)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(batch, 3)).astype(np.float32)
    noise = (10 * rng.standard_normal((batch, H))).astype(np.float32)  # extreme noise: bounds bite
    chunk = onnx.infer(state, noise)
    assert chunk.shape == (batch, H, 1) and np.all(np.abs(chunk) <= 2.0)
    assert np.abs(chunk - policy.infer(state, noise)).max() <= 1e-5


@pytest.mark.parametrize("mode", ["replace", "soft"])
def test_inpainting_keeps_the_committed_prefix(chunked: Path, mode: str) -> None:
    onnx = OnnxPolicy.load(chunked / mode)
    rng = np.random.default_rng(0)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(64, 3)).astype(np.float32)
    previous = onnx.infer(state, rng.standard_normal((64, H)).astype(np.float32))
    noise = rng.standard_normal((64, H)).astype(np.float32)
    for length in range(1, H + 1):
        prefix = previous[:, H - length :]  # what is left of the previous chunk
        for d in range(min(length, H - 1) + 1):
            chunk = onnx.infer_inpainted(state, prefix, d, noise)
            assert np.abs(chunk[:, :d] - prefix[:, :d]).max(initial=0.0) <= COMMITTED_ATOL
    empty = onnx.infer_inpainted(state, previous[:, :0], 0, noise)
    assert np.array_equal(empty, onnx.infer(state, noise))  # an empty prefix is no inpainting, bit for bit


def test_the_soft_mask_pulls_the_overlap_toward_the_prefix(chunked: Path) -> None:
    """Past the committed actions the soft mask lands closer to the previous chunk than replacement does
    (which leaves them free)."""
    rng = np.random.default_rng(1)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(256, 3)).astype(np.float32)
    replace, soft = OnnxPolicy.load(chunked / "replace"), OnnxPolicy.load(chunked / "soft")
    prefix = replace.infer(state, rng.standard_normal((256, H)).astype(np.float32))[:, 1:]  # L = 3
    noise = rng.standard_normal((256, H)).astype(np.float32)
    gap = {
        name: np.abs(p.infer_inpainted(state, prefix, 1, noise)[:, 1] - prefix[:, 1]).mean()
        for name, p in (("replace", replace), ("soft", soft))
    }
    # W = 0.37 at the first free index of a 3-action overlap with d = 1 (RTC's decay)
    assert gap["soft"] < 0.9 * gap["replace"], gap


def test_chunked_diffusion_exports_with_inpainting(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    """The VP path inpaints too (its own interpolation); export parity covers the prefix inputs."""
    overrides = {"action_horizon": 2, "variant": "qipo-diff", "solver_steps": None}
    # atol 5e-5: a chunked VP sampler already differs from torch by 1.6e-5 at batch 256 with no prefix
    # (ONNX Runtime's rounding, amplified by DPM-Solver's early steps from α(1) ≈ 0.006), prefix or not
    train_and_export(pendulum_dataset_dir, tmp_path, overrides, ("replace",), few=False, atol=5e-5)
    manifest = verify_artifact(tmp_path / "replace")
    assert manifest.action_horizon == 2 and manifest.export_parity_max_abs_err is not None
    assert manifest.export_parity_max_abs_err <= 5e-5
    onnx = OnnxPolicy.load(tmp_path / "replace")
    state = np.zeros((8, 3), np.float32)
    prefix = onnx.infer(state)[:, 1:]
    chunk = onnx.infer_inpainted(state, prefix, 1)
    # the VP path ends at t_min, not at the data: the committed action is within σ(t_min) of the prefix
    assert np.abs(chunk[:, 0] - prefix[:, 0]).max() <= 0.1


def test_controller_runs_the_artifact_in_pendulum_under_delay(chunked: Path) -> None:
    gym = pytest.importorskip("gymnasium")
    onnx = OnnxPolicy.load(chunked / "soft")
    t = [0.0]
    ctrl = ChunkedController(onnx, runner=SimulatedDelay(2, 0.05, lambda: t[0]), clock=lambda: t[0])
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    actions = []
    for _ in range(60):
        action = ctrl.step(obs)
        actions.append(action)
        obs, *_ = env.step(action)
        t[0] += 0.05
    env.close()
    assert ctrl.latency_steps() == 2 and ctrl.starved == 1
    for sw in ctrl.switches:
        assert sw.inpainted == (len(sw.prefix) > 0)
        for i in range(sw.committed):  # executed exactly as committed, and the chunk agrees with it
            assert np.array_equal(actions[sw.request_step + i], sw.prefix[i])
            assert np.abs(sw.chunk[i] - sw.prefix[i]).max() <= COMMITTED_ATOL
    assert np.all(np.abs(np.array(actions)) <= 2.0)
