"""torchrun data parallelism: 2 CPU processes (gloo, one thread each) train what 1 process trains.

Every rank draws the global batch, the flow-matching noise and times from the shared generator and keeps
its slice, and gradients are averaged across ranks, so W processes differ from 1 only in the order of
float additions (a per-rank mean, then the mean of the ranks). Measured on these runs: ≤ 1e-7 on every
parameter after all three phases and two renewals; the tests allow 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import TINY_CONFIG
from training.checkpoint import load_checkpoint
from training.config import QIPOConfig
from training.data import load_dataset
from training.distributed import Cluster, DistributedError, check_batches, env_cluster, loopback_torchrun
from training.qipo import QIPOTrainer
from training.support import SupportSets

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5  # parameters after the whole run; float reduction order differs, nothing else
CFG: dict[str, Any] = TINY_CONFIG | {
    "behavior_steps": 20,
    "critic_steps": 10,
    "improve_steps": 20,
    "renew_every": 10,  # renewals at steps 30 and 40
    "probe_states": 256,
    "log_every": 10,
}
# The resume test covers the other paths: softmax-q's behaviour samples split over ranks, eager renewal
# gathered from both, and resampled support actions.
OTHER = CFG | {"critic_kind": "softmax-q", "renewal": "eager", "improve_loss": "resample"}


def torchrun(data: Path, out: Path, cfg: dict[str, Any], *extra: str, procs: int = 2) -> None:
    """`qipo train` under torchrun on loopback, one torch thread per process."""
    config = out.parent / f"{out.name}-config.json"
    config.write_text(json.dumps(cfg))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = loopback_torchrun(procs, "-m", "service.cli", "train", str(data), "--out", str(out), "--config")
    cmd += [str(config), "--eval-episodes", "0", "--device", "cpu", "--quiet", *extra]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def one_process(data: Path, cfg: dict[str, Any]) -> QIPOTrainer:
    trainer = QIPOTrainer(load_dataset(data), QIPOConfig.model_validate(cfg), progress=False)
    trainer.fit()
    return trainer


def assert_same_parameters(trainer: QIPOTrainer, state: dict[str, Any]) -> None:
    critic = trainer.critic.state_dict()
    pairs = [(trainer.net.state_dict(), state["net"])] + [
        (critic[k], state["critic"][k]) for k in ("q", "q_target", "v") if k in critic
    ]
    for mine, theirs in pairs:
        for name, value in mine.items():
            assert torch.allclose(value, theirs[name], atol=ATOL, rtol=0), name


def test_two_processes_train_what_one_does(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    torchrun(pendulum_dataset_dir, tmp_path / "run", CFG)
    state = load_checkpoint(tmp_path / "run")
    single = one_process(pendulum_dataset_dir, CFG)
    assert state["step"] == single.step == 50 and state["renewals"] == single.renewals == 2
    assert_same_parameters(single, state)
    logged = json.loads(state["history"])
    assert [r["step"] for r in logged] == [r["step"] for r in single.history]
    for theirs, mine in zip(logged, single.history, strict=True):  # the global batch's loss, not a slice's
        assert theirs["loss"] == pytest.approx(mine["loss"], rel=1e-5)
    renewals = json.loads(state["renewal_log"])
    assert [r["beta_eff"] for r in renewals] == pytest.approx([r["beta_eff"] for r in single.renewal_log])
    # rank 0 alone wrote the run
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert json.loads((tmp_path / "run" / "dataset.json").read_text())["world_size"] == 2


def test_a_two_process_run_resumes_in_one_process(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    torchrun(pendulum_dataset_dir, run, OTHER, "--until", "35")  # between the two renewals
    state = load_checkpoint(run)
    assert state["step"] == 35 and state["supports"] is not None
    resumed = QIPOTrainer(
        load_dataset(pendulum_dataset_dir), QIPOConfig.model_validate(OTHER), progress=False
    )
    resumed.load_state_dict(state)
    resumed.fit()
    assert_same_parameters(one_process(pendulum_dataset_dir, OTHER), load_state(resumed))


def load_state(trainer: QIPOTrainer) -> dict[str, Any]:
    return {"net": trainer.net.state_dict(), "critic": trainer.critic.state_dict()}


# ----- fast checks, no process group ----------------------------------------------------------------


def test_batches_the_world_size_does_not_divide_are_refused_in_one_line() -> None:
    check_batches(Cluster(0, 2), batch_size=256, improve_batch_size=64)
    with pytest.raises(DistributedError, match=r"batch_size=255 does not split over 2 processes.*=254"):
        check_batches(Cluster(1, 2), batch_size=255)


def test_the_cli_refuses_before_joining_a_process_group(
    pendulum_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    from training.cli import train_command

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    app = typer.Typer()
    app.command()(train_command)
    result = CliRunner().invoke(
        app, [str(pendulum_dataset_dir), "--out", str(tmp_path), "--batch-size", "63", "--eval-episodes", "0"]
    )
    assert result.exit_code == 1
    assert "error: batch_size=63 does not split over 2 processes" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_env_cluster_reads_torchrun_and_defaults_to_one_process() -> None:
    assert env_cluster({}) == Cluster(0, 1, 0)
    assert env_cluster({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Cluster(3, 4, 1)
    with pytest.raises(DistributedError, match="outside WORLD_SIZE"):
        env_cluster({"RANK": "2", "WORLD_SIZE": "2"})


def test_shards_and_blocks_cover_every_row_once() -> None:
    rows = torch.arange(10)
    assert torch.equal(torch.cat([rows[Cluster(r, 2).shard(10)] for r in range(2)]), rows)
    assert torch.equal(torch.cat([rows[Cluster(r, 3).block(10)] for r in range(3)]), rows)
    assert Cluster(3, 4).block(2) == slice(2, 2)  # more ranks than rows: an empty block


def test_support_sets_hold_only_drawn_rows_and_round_trip() -> None:
    sets = SupportSets(1_000_000, 5, 3)
    rows = torch.tensor([7, 999_999, 3])
    actions, q = torch.randn(3, 5, 3), torch.randn(3, 5)
    sets.put(rows, actions, q)
    assert torch.equal(sets.actions(torch.tensor([3, 7])), actions[[2, 0]])
    assert torch.equal(sets.missing(torch.tensor([3, 4, 4, 5])), torch.tensor([4, 5]))
    assert sets.nbytes == 8_000_000 + 1024 * 20 * 4  # the slot index and 1024 slots, not 1M sets
    again = SupportSets(1_000_000, 5, 3)
    again.load_state_dict(sets.state_dict())
    assert torch.equal(again.q(rows), q)
    sets.clear()
    with pytest.raises(KeyError, match="ensure_support"):
        sets.q(rows)
    dense = torch.zeros(10, 5, 3)
    filled = torch.zeros(10, dtype=torch.bool)
    filled[4] = True
    assert torch.equal(SupportSets.from_dense(dense, torch.ones(10, 5), filled).rows(), torch.tensor([4]))
