"""QIPO's support sets and weights (docs/architecture.md, step 3), best-of-N and config resolution."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from service.artifact import Manifest
from service.runtime import OnnxPolicy
from tests.conftest import TINY_CONFIG
from training.config import QIPOConfig
from training.data import load_dataset
from training.efm import q_weights
from training.export import export_artifact
from training.policy import FlowPolicy
from training.qipo import QIPOTrainer, next_state_rows
from training.support import SupportSets


class LinearTwin(nn.Module):
    """A known critic: Q(s, a) = scale·a[0] in both heads (so min(Q1, Q2) = scale·a[0])."""

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        q = self.scale * a[:, 0]
        return q, q

    def q_min(self, s: Tensor, a: Tensor) -> Tensor:
        return self.forward(s, a)[0]


def make_trainer(dataset_dir: Path, **overrides: object) -> QIPOTrainer:
    cfg = QIPOConfig.model_validate(TINY_CONFIG | {"behavior_steps": 20, "critic_steps": 10} | overrides)
    return QIPOTrainer(load_dataset(dataset_dir), cfg, progress=False)


def export_and_serve(policy: FlowPolicy, trainer: QIPOTrainer, out: Path) -> tuple[Manifest, OnnxPolicy]:
    """Export `policy` with the trainer's config, then load it as the server does (warmed)."""
    manifest = export_artifact(
        policy,
        out,
        name=out.name,
        variant="qipo-ot",
        training_config=trainer.cfg.model_dump(mode="json"),
        dataset={},
        scores={},
    )
    served = OnnxPolicy.load(out)
    served.warmup(1)
    return manifest, served


def test_loss_reduces_to_cfm_at_beta_zero(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, beta=0.0, temperature="raw", data_anchor=0.0)
    trainer.fit(until=trainer.k1 + trainer.k2 + 1)  # into improvement: support sets exist
    idx = torch.arange(8)
    weights = trainer.support_weights(idx)
    assert trainer.supports is not None
    support = trainer.supports.actions(idx)
    m1 = trainer.cfg.support_size + 1
    assert torch.allclose(weights, torch.full_like(weights, 1 / m1))
    state = trainer.gen.get_state()
    weighted = trainer.flow_loss(trainer.s[idx], support, weights)
    trainer.gen.set_state(state)  # same x0 and t draws: plain CFM on the flattened support pairs
    s_flat = trainer.s[idx].repeat_interleave(m1, dim=0)
    plain = trainer.flow_loss(s_flat, support.reshape(8 * m1, -1))
    assert torch.allclose(weighted, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("q_gap", [0.5, 5.0])
def test_weights_go_to_the_better_action_as_beta_grows(q_gap: float) -> None:
    q = torch.tensor([[0.0, q_gap]])
    better = [float(q_weights(q, beta)[0, 1]) for beta in (0.0, 0.5, 1.0, 3.0, 10.0, 100.0)]
    assert better[0] == pytest.approx(0.5)
    assert better[2] > better[1] > better[0]  # strictly, before float32 saturates at 1
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(better))
    assert better[-1] > 0.999


def test_trainer_weights_favour_high_q_support_actions(pendulum_dataset_dir: Path) -> None:
    """Two support actions per state, −0.9 and +0.9, under Q = a: the weight goes to +0.9 with β."""
    trainer = make_trainer(pendulum_dataset_dir, temperature="raw")
    trainer.critic.q = LinearTwin(scale=1.0)  # type: ignore[assignment]
    n = trainer.dataset.size
    support = torch.tensor([-0.9, 0.9]).reshape(1, 2, 1).expand(n, 2, 1).contiguous()
    trainer.supports = SupportSets(n, 2, 1)
    trainer.supports.put(torch.arange(n), support, trainer.score(trainer.s, support))
    previous = 0.5
    for beta in (0.1, 1.0, 3.0):
        trainer.beta_eff = beta
        w = trainer.support_weights(torch.arange(n))
        assert torch.allclose(w[:, 1], w[0, 1].expand(n))
        assert float(w[0, 1]) > previous
        previous = float(w[0, 1])
    assert previous > 0.99


def test_renewal_samples_the_current_policy_and_keeps_the_dataset_action(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, renewal="eager")
    trainer.fit(until=trainer.k1 + trainer.k2 + 1)
    assert trainer.supports is not None and trainer.renewals == 1
    m, every = trainer.cfg.support_size, torch.arange(trainer.dataset.size)
    before = trainer.supports.actions(every).clone()
    # Make the current policy a known one: velocity ≡ +5 drives every Euler path to the upper bound.
    final = trainer.net.out[-1]
    assert isinstance(final, nn.Linear)
    with torch.no_grad():
        final.weight.zero_()
        final.bias.fill_(5.0)
    trainer.renew_support()
    assert trainer.renewals == 2
    support = trainer.supports.actions(every)
    assert torch.equal(support[:, :m], torch.ones_like(support[:, :m]))
    assert not torch.equal(support[:, :m], before[:, :m])
    assert torch.equal(support[:, m], trainer.a)  # the dataset action is always last
    assert torch.allclose(trainer.supports.q(every), trainer.score(trainer.s, support))


def test_first_support_sets_reuse_the_critics_behaviour_samples(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, critic_kind="softmax-q")
    trainer.fit(until=trainer.k1 + trainer.k2 + 1)
    assert trainer.behavior_samples is not None and trainer.supports is not None
    n, m = trainer.dataset.size, trainer.cfg.support_size
    drawn = trainer.supports.rows()  # lazy: the probe and the first batch
    assert 0 < len(drawn) < n
    assert torch.equal(trainer.supports.actions(drawn)[:, :m], trainer.behavior_samples[drawn])


def test_renewals_happen_every_k_renew_steps(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, improve_steps=25, renew_every=10)
    trainer.fit()
    assert trainer.renewals == 3  # improvement steps 0, 10, 20
    assert len(trainer.renewal_s) == 3


def test_next_state_rows_point_at_each_next_state(pendulum_dataset_dir: Path) -> None:
    ds = load_dataset(pendulum_dataset_dir)
    index, extra = next_state_rows(ds.observations, ds.next_observations)
    table = np.concatenate([ds.observations, ds.next_observations[extra.numpy()]])
    assert np.array_equal(table[index.numpy()], ds.next_observations)
    assert len(extra) == len(ds.episode_returns())  # one extra state per episode end


def test_iql_critic_needs_no_behaviour_samples(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, critic_kind="iql", improve_steps=5)
    trainer.fit()
    assert trainer.behavior_samples is None
    assert trainer.supports is not None and trainer.renewals == 1
    assert all(np.isfinite(r["loss"]) for r in trainer.history)


def test_resample_loss_trains(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir, improve_loss="resample", improve_steps=5)
    trainer.fit()
    assert trainer.history[-1]["phase"] == "improve" and np.isfinite(trainer.history[-1]["loss"])


def test_solver_defaults_follow_the_variant() -> None:
    ot = QIPOConfig()
    diff = QIPOConfig(variant="qipo-diff")
    assert (ot.solver, ot.solver_steps) == ("euler", 10)
    assert (diff.solver, diff.solver_steps) == ("dpm-solver-2", 8)
    assert QIPOConfig.model_validate(diff.model_dump(mode="json")) == diff
    with pytest.raises(ValueError, match="does not fit variant qipo-diff"):
        QIPOConfig(variant="qipo-diff", solver="euler")


def test_best_of_n_picks_the_highest_q_candidate_and_exports(
    pendulum_dataset_dir: Path, tmp_path: Path
) -> None:
    from training.policy import BestOfNPolicy

    trainer = make_trainer(pendulum_dataset_dir, action_selection="best-of-n", best_of_n=4)
    trainer.fit(until=trainer.k1)
    policy = trainer.policy()
    assert isinstance(policy, BestOfNPolicy) and policy.noise_dim == 4
    rng = np.random.default_rng(0)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(7, 3)).astype(np.float32)
    noise = rng.standard_normal((7, 4)).astype(np.float32)
    single = FlowPolicy(trainer.net, trainer.normalizer, trainer.path, trainer.cfg.steps).eval()
    candidates = np.stack([single.infer(state, noise[:, k : k + 1]) for k in range(4)], axis=1)  # [7,4,1]
    with torch.no_grad():
        s_norm = trainer.normalizer.state(torch.as_tensor(state)).repeat_interleave(4, dim=0)
        a_unit = trainer.normalizer.action_to_unit(torch.as_tensor(candidates.reshape(28, 1)))
        q = trainer.critic.q.q_min(s_norm, a_unit).reshape(7, 4).numpy()
    expected = candidates[np.arange(7), q.argmax(1)]
    assert np.allclose(policy.infer(state, noise), expected, atol=1e-5)
    manifest, served = export_and_serve(policy, trainer, tmp_path / "bon")
    assert manifest.training_config["action_selection"] == "best-of-n" and manifest.noise_dim == 4
    session = ort.InferenceSession(str(tmp_path / "bon" / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[1].shape[1] == 4  # noise [B, N·A]
    (onnx_action,) = session.run(["action"], {"state": state, "noise": noise})
    assert np.abs(onnx_action - expected).max() <= 1e-5
    # the server loads it (its signature check uses noise_dim)
    assert served.noise_dim == 4 and np.abs(served.infer(state, noise) - expected).max() <= 1e-5


def test_action_noise_scales_the_source_noise_in_the_exported_graph(
    pendulum_dataset_dir: Path, tmp_path: Path
) -> None:

    trainer = make_trainer(pendulum_dataset_dir, action_noise=0.0)
    trainer.fit(until=trainer.k1)
    rng = np.random.default_rng(1)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(9, 3)).astype(np.float32)
    noise = rng.standard_normal((9, 1)).astype(np.float32)
    full = FlowPolicy(trainer.net, trainer.normalizer, trainer.path, trainer.cfg.steps).eval()
    half = trainer.policy(noise_scale=0.5)
    assert np.allclose(half.infer(state, noise), full.infer(state, 0.5 * noise), atol=1e-6)
    noise_free = trainer.policy()  # the config's action_noise = 0: every noise gives the same action
    expected = full.infer(state, np.zeros_like(noise))
    assert np.allclose(noise_free.infer(state, noise), expected, atol=1e-6)
    assert not np.allclose(full.infer(state, noise), expected, atol=1e-3)  # the noise matters at 1
    _, served = export_and_serve(noise_free, trainer, tmp_path / "noise-free")
    assert np.abs(served.infer(state, noise) - expected).max() <= 1e-5
    from training.checkpoint import policy_from_checkpoint

    trainer.save(tmp_path / "run")
    assert policy_from_checkpoint(tmp_path / "run")[0].noise_scale == 0.0


class BowlTwin(nn.Module):
    """Q(s, a) = −Σ (a − 0.5)²: its gradient points at 0.5 and vanishes there."""

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        q = -(a - 0.5).pow(2).sum(-1)
        return q, q

    def q_min(self, s: Tensor, a: Tensor) -> Tensor:
        return self.forward(s, a)[0]


def test_support_ascent_climbs_the_critic_by_the_step_in_action_units(pendulum_dataset_dir: Path) -> None:
    trainer = make_trainer(pendulum_dataset_dir)
    trainer.critic.q = LinearTwin(scale=37.0)  # type: ignore[assignment]
    s = trainer.s[:4]
    actions = torch.tensor([-0.5, 0.0, 0.5, 0.98]).reshape(4, 1, 1).expand(4, 3, 1).contiguous()
    moved = trainer.ascend(s, actions, 0.1)
    # constant gradient: every sample moves by exactly δ whatever Q's scale, and stays in the box
    assert torch.allclose(moved, (actions + 0.1).clamp(-1, 1))
    trainer.critic.q = BowlTwin()  # type: ignore[assignment]
    moved = trainer.ascend(s, actions, 0.1)
    q = trainer.critic.q.q_min
    before, after = q(s, actions.reshape(12, 1)), q(s, moved.reshape(12, 1))
    assert bool((after >= before).all())
    at_top = moved.reshape(4, 3)[2]  # the samples at the critic's maximum have no gradient: they stay
    assert torch.allclose(at_top, torch.full((3,), 0.5))


def test_support_ascent_moves_only_the_policy_samples_not_the_dataset_action(
    pendulum_dataset_dir: Path,
) -> None:
    trainer = make_trainer(pendulum_dataset_dir, support_ascent=0.2)
    trainer.fit(trainer.k1 + trainer.k2 + 1)
    trainer.critic.q = LinearTwin(scale=1.0)  # type: ignore[assignment]
    rows = torch.arange(8)
    plain = trainer.sample_unit_actions(trainer.frozen, trainer.s, rows, trainer.cfg.support_size, 0)
    support, _ = trainer._draw_support(rows)
    assert torch.equal(support[:, -1], trainer.a[rows])
    assert torch.allclose(support[:, :-1], (plain + 0.2).clamp(-1, 1), atol=1e-6)
