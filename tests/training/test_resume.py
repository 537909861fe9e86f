"""A run resumed from its checkpoint continues exactly: the next losses and the weights are identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_CONFIG
from training.checkpoint import load_checkpoint
from training.config import QIPOConfig
from training.data import load_dataset
from training.qipo import QIPOTrainer

CFG = TINY_CONFIG | {
    "behavior_steps": 12,
    "critic_steps": 8,
    "improve_steps": 12,
    "renew_every": 5,
    "log_every": 3,
}


def trainer_for(dataset_dir: Path, **overrides: object) -> QIPOTrainer:
    return QIPOTrainer(load_dataset(dataset_dir), QIPOConfig.model_validate(CFG | overrides), progress=False)


@pytest.mark.parametrize(
    ("stop", "overrides"),
    [
        (5, {}),  # mid behaviour warm-up
        (12, {}),  # exactly at the critic boundary: behaviour samples are drawn after resuming
        (16, {}),  # mid critic
        (25, {}),  # improvement, exactly at a renewal (improvement step 5)
        (27, {}),  # improvement, between renewals
        (27, {"variant": "qipo-diff", "critic_kind": "iql", "improve_loss": "resample"}),
    ],
)
def test_resume_reproduces_the_next_losses_exactly(
    pendulum_dataset_dir: Path, tmp_path: Path, stop: int, overrides: dict[str, object]
) -> None:
    straight = trainer_for(pendulum_dataset_dir, **overrides)
    straight.fit(until=stop)
    straight.save(tmp_path)
    expected = [straight.train_step() for _ in range(3)]

    resumed = trainer_for(pendulum_dataset_dir, **overrides)
    resumed.load_state_dict(load_checkpoint(tmp_path))
    assert resumed.step == stop
    got = [resumed.train_step() for _ in range(3)]
    assert got == expected  # bit-identical floats, same phases
    for p, q in zip(straight.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(p, q)
    straight.fit()
    resumed.fit()

    def curve(t: QIPOTrainer) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k not in ("elapsed_s", "renewal_s")} for r in t.history]

    assert curve(straight) == curve(resumed)  # the logged learning curve continues identically
    for p, q in zip(straight.critic.q.parameters(), resumed.critic.q.parameters(), strict=True):
        assert torch.equal(p, q)


def test_checkpoint_loads_with_weights_only(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    trainer = trainer_for(pendulum_dataset_dir)
    trainer.fit(until=22)
    path = trainer.save(tmp_path)
    state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary pickle
    assert state["step"] == 22 and state["config"]["beta"] == trainer.cfg.beta


def test_resume_on_other_data_is_refused(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    from training.data.dataset import TransitionDataset

    trainer = trainer_for(pendulum_dataset_dir)
    trainer.fit(until=3)
    trainer.save(tmp_path)
    ds = load_dataset(pendulum_dataset_dir)
    arrays = ds.to_arrays()
    arrays["rewards"] = arrays["rewards"] + 1.0
    other = TransitionDataset.validated(arrays, action_low=ds.action_low, action_high=ds.action_high)
    with pytest.raises(ValueError, match="different dataset"):
        QIPOTrainer(other, trainer.cfg, progress=False).load_state_dict(load_checkpoint(tmp_path))


def test_same_seed_same_run(pendulum_dataset_dir: Path) -> None:
    a, b = trainer_for(pendulum_dataset_dir), trainer_for(pendulum_dataset_dir)
    first = [a.train_step() for _ in range(4)]
    assert first == [b.train_step() for _ in range(4)]
    c = trainer_for(pendulum_dataset_dir, seed=1)
    assert [c.train_step() for _ in range(4)] != first


def test_behaviour_reuse_needs_the_same_variant_and_network(
    pendulum_dataset_dir: Path, tmp_path: Path
) -> None:
    bc = trainer_for(pendulum_dataset_dir, algo="bc")
    bc.fit()
    bc.save(tmp_path)
    same = trainer_for(pendulum_dataset_dir)
    same.load_behavior(tmp_path)
    assert same.step == same.k1
    for p, q in zip(bc.net.parameters(), same.net.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="variant qipo-ot"):
        trainer_for(pendulum_dataset_dir, variant="qipo-diff").load_behavior(tmp_path)


def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path: Path) -> None:
    import torch

    from training.checkpoint import CHECKPOINT, CheckpointError

    torch.save({"format": 0, "config": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"checkpoint format 0.*train the run again"):
        load_checkpoint(tmp_path)
