"""`qipo train|eval|export` as a user drives them: --set, --device, quiet progress, TensorBoard, the env
recorded in the run and the manifest, and one-line refusals for an env that does not fit."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner, Result

from training.cli import apply_sets, eval_command, export_command, train_command
from training.config import QIPOConfig
from training.export import model_name_for

runner = CliRunner()
TINY_SETS = [
    "behavior_steps=40",
    "critic_steps=20",
    "improve_steps=20",
    "renew_every=10",
    "support_size=2",
    "critic_support=2",
    "batch_size=32",
    "improve_batch_size=8",
    "solver_steps=2",
    "network.hidden=16",
    "network.blocks=1",
    "network.time_dim=4",
    "network.critic_hidden=16",
    "log_every=10",
]


def invoke(command: object, *args: str) -> Result:
    app = typer.Typer()
    app.command()(command)  # type: ignore[arg-type]
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def cli_run(pendulum_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-run")
    sets = [arg for item in TINY_SETS for arg in ("--set", item)]
    args = [str(pendulum_dataset_dir), "--out", str(out), "--device", "cpu", "--eval-episodes", "1", *sets]
    result = invoke(train_command, *args)
    assert result.exit_code == 0, result.output
    return out


def test_set_reaches_any_field_dotted_for_nested() -> None:
    cfg = QIPOConfig.model_validate(
        apply_sets(
            {"gamma": 0.9}, ["gamma=0.995", "reward_scale=auto", "network.hidden=64", "grad_clip=null"]
        )
    )
    assert cfg.gamma == 0.995 and cfg.reward_scale == "auto" and cfg.network.hidden == 64
    assert cfg.grad_clip is None


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("network.hiden=3", "network.hiden: Extra inputs are not permitted (known: hidden, blocks"),
        ("gama=0.9", "gama: Extra inputs are not permitted (known: algo, variant"),
        ("gamma=2", "gamma: Input should be less than or equal to 1"),
        ("gamma", "--set 'gamma': use key=value"),
    ],
)
def test_bad_set_is_one_line(tmp_path: Path, assignment: str, message: str) -> None:
    result = invoke(
        train_command, str(tmp_path / "x.npz"), "--out", str(tmp_path / "run"), "--set", assignment
    )
    assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1


def test_cuda_without_a_gpu_is_refused_and_auto_falls_back() -> None:
    from training.device import DeviceError, resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="sees no CUDA device; use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="choose auto, cpu or cuda"):
        resolve_device("tpu")


def test_cpu_run_through_the_cli_equals_the_trainer(cli_run: Path, pendulum_dataset_dir: Path) -> None:
    """--device cpu changes nothing: the CLI run's weights equal a bare QIPOTrainer run of the same config."""
    from training.checkpoint import load_checkpoint
    from training.data import load_dataset
    from training.qipo import QIPOTrainer

    cfg = QIPOConfig.model_validate(apply_sets({}, TINY_SETS))
    trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
    trainer.fit()
    ours = load_checkpoint(cli_run)["net"]
    for key, value in trainer.net.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_run_records_env_and_writes_no_bars_to_a_log(cli_run: Path) -> None:
    record = json.loads((cli_run / "dataset.json").read_text())
    assert record["env_id"] == "Pendulum-v1" and record["device"] == "cpu"
    assert json.loads((cli_run / "eval.json").read_text())["env_id"] == "Pendulum-v1"


def test_tensorboard_scalars_beside_metrics(cli_run: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cli_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"behavior/loss", "critic/loss", "improve/loss", "eval/mean_return"} <= tags
    steps = [e.step for e in events.Scalars("behavior/loss")]
    assert steps == [10, 20, 30, 40]


def test_progress_bars_are_off_when_output_is_not_a_terminal(
    pendulum_dataset_dir: Path, tmp_path: Path
) -> None:
    sets = [arg for item in TINY_SETS for arg in ("--set", item)]
    args = [str(pendulum_dataset_dir), "--out", str(tmp_path / "r"), "--eval-episodes", "1", *sets]
    result = invoke(train_command, *args)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "step/s" not in result.output and "it/s" not in result.output
    # the summary: a few short lines (a tiny run's critic also earns a warning line), no bar redraws
    lines = result.output.splitlines()
    assert len(lines) <= 12 and max(map(len, lines)) < 250, result.output


def test_eval_uses_the_recorded_env(cli_run: Path) -> None:
    result = invoke(eval_command, str(cli_run), "--episodes", "1")
    assert result.exit_code == 0, result.output
    assert "Pendulum-v1" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            "MountainCarContinuous-v0",
            "expects obs_dim=3, act_dim=1; MountainCarContinuous-v0 gives obs_dim=2",
        ),
        ("Nope-v0", "unknown env id 'Nope-v0'"),
    ],
)
def test_eval_refuses_an_env_that_does_not_fit_in_one_line(cli_run: Path, env: str, message: str) -> None:
    result = invoke(eval_command, str(cli_run), "--env", env, "--episodes", "1")
    assert result.exit_code == 1 and message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_eval_of_a_run_without_env_asks_for_one(tiny_run: Path) -> None:
    result = invoke(eval_command, str(tiny_run), "--episodes", "1")
    assert result.exit_code == 1 and "records no env id" in result.stderr and "--env" in result.stderr


def test_export_is_named_after_the_dataset_and_records_the_env(cli_run: Path, tmp_path: Path) -> None:
    from service.artifact import read_manifest

    result = invoke(export_command, str(cli_run), "--out", str(tmp_path / "artifact"))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "artifact")
    assert manifest.name == "pendulum-mixed" and manifest.env_id == "Pendulum-v1"
    wrong = invoke(export_command, str(cli_run), "--out", str(tmp_path / "b"), "--env", "Reacher-v5")
    assert wrong.exit_code == 1 and "expects obs_dim=3" in wrong.stderr


def test_export_refuses_a_parity_miss_in_one_line_and_leaves_nothing(cli_run: Path, tmp_path: Path) -> None:
    """`--atol 0` cannot be met by float32 ONNX Runtime: the export is refused, says how to accept it, and
    leaves no half-written artifact a registry could pick up."""
    out = tmp_path / "strict"
    result = invoke(export_command, str(cli_run), "--out", str(out), "--atol", "0")
    assert result.exit_code == 1 and "differs from torch" in result.stderr and "--atol" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (out / "policy.onnx").exists() and not (out / "manifest.json").exists()


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("reacher-mixed", "reacher-mixed"),
        ("pendulum/mixed-v0", "pendulum-mixed"),
        ("mujoco/hopper/medium-v0", "mujoco-hopper-medium"),
        ("My Robot Data (2024)", "my-robot-data-2024"),
    ],
)
def test_default_model_name_follows_the_data(name: str, slug: str) -> None:
    assert model_name_for({"name": name}, Path("runs/x")) == slug
    assert model_name_for({}, Path("runs/arm-bc")) == "arm-bc"


def test_version_flag_matches_the_package() -> None:
    from service.cli import app

    version = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"qipo {version['version']}"
