"""Session fixtures: a tiny Pendulum dataset, a briefly trained QIPO run and its exported artifact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_CONFIG = {
    "behavior_steps": 150,
    "critic_steps": 60,
    "improve_steps": 60,
    "renew_every": 30,
    "support_size": 4,
    "critic_support": 4,
    "batch_size": 64,
    "improve_batch_size": 16,
    "solver_steps": 5,
    "network": {"hidden": 32, "blocks": 1, "time_dim": 8, "critic_hidden": 32, "critic_layers": 2},
    "log_every": 50,
}


@pytest.fixture(scope="session")
def pendulum_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from training.data.pendulum import make_pendulum_datasets

    root = tmp_path_factory.mktemp("data")
    return make_pendulum_datasets(root, ("mixed",), episodes=10, seed=0)["mixed"]


@pytest.fixture(scope="session")
def tiny_run(pendulum_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A QIPO run of a few hundred steps through every phase: what the training tests inspect."""
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    trainer = QIPOTrainer(
        load_dataset(pendulum_dataset_dir), QIPOConfig.model_validate(TINY_CONFIG), progress=False
    )
    trainer.fit()
    run = tmp_path_factory.mktemp("run")
    trainer.save(run)
    return run


def export_tiny(run: Path, out: Path, name: str = "pendulum-qipo") -> Path:
    from training.checkpoint import policy_from_checkpoint
    from training.export import export_artifact

    policy, cfg, _ = policy_from_checkpoint(run)
    export_artifact(
        policy,
        out,
        name=name,
        variant=cfg.variant,
        training_config=cfg.model_dump(mode="json"),
        dataset={"name": "pendulum/mixed-v0"},
        scores={},
    )
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tiny_run, tmp_path_factory.mktemp("artifact"))


@pytest.fixture
def directory_registry(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "registry"
    root.mkdir()
    yield root
