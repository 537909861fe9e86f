"""Datasets are refused with a message naming the key, row and fix; MuJoCo generation works end to end
on a tiny SAC budget (slow: needs the bench extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data import DatasetError, TransitionDataset, load_dataset
from training.data.dataset import save_npz


def arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    return {
        "observations": rng.standard_normal((n, 3)).astype(np.float32),
        "next_observations": rng.standard_normal((n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


BOUNDS = {"action_low": -np.ones(2, np.float32), "action_high": np.ones(2, np.float32)}


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "next_observations"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_refused_naming_key_and_row(key: str, bad: float) -> None:
    data = arrays()
    data[key] = data[key].copy()
    data[key].reshape(len(data[key]), -1)[7, 0] = bad
    with pytest.raises(DatasetError, match=rf"key '{key}' has NaN/Inf at row 7; clean or drop that row"):
        TransitionDataset.validated(data, **BOUNDS)


def test_out_of_bounds_action_is_refused_through_a_file(tmp_path: Path) -> None:
    data = arrays()
    data["actions"][5, 1] = 1.5
    path = tmp_path / "bad.npz"
    np.savez(path, **data, **BOUNDS)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "row 5 dim 1" in message and "outside the declared bounds" in message


def test_good_dataset_roundtrips_and_trains_on(tmp_path: Path) -> None:
    ds = TransitionDataset.validated(arrays(), **BOUNDS, name="ok")
    loaded = load_dataset(save_npz(ds, tmp_path / "ok.npz"))
    assert loaded.fingerprint() == ds.fingerprint()
    assert np.array_equal(loaded.action_low, BOUNDS["action_low"])


def test_cli_refuses_bad_data_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import data_app

    data = arrays()
    data["rewards"][3] = np.nan
    path = tmp_path / "bad.npz"
    np.savez(path, **data, **BOUNDS)
    result = CliRunner().invoke(data_app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert "key 'rewards' has NaN/Inf at row 3" in result.output


def test_unknown_mujoco_env_or_kind_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    from training.data.mujoco import make_mujoco_datasets

    with pytest.raises(ValueError, match="unknown MuJoCo env"):
        make_mujoco_datasets("ant", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        make_mujoco_datasets("hopper", tmp_path, ("expert-only",))


def test_mujoco_datasets_train_then_rebuild_from_the_policy_file_alone(tmp_path: Path) -> None:
    """A tiny SAC budget trains the behaviour policies; rolling out the saved `.npz` alone then rebuilds
    byte-identical datasets, which is what lets a fresh machine skip SAC."""
    pytest.importorskip("mujoco")
    import torch

    from training.data.mujoco import GENERATION_FILE, make_mujoco_datasets

    torch.set_num_threads(1)
    policies = tmp_path / "policies"
    kwargs = {"sac_steps": 200, "expert_steps": 100, "transitions": 600, "seed": 3, "policies": policies}
    paths = make_mujoco_datasets("hopper", tmp_path / "a", train=True, progress=False, **kwargs)  # type: ignore[arg-type]
    assert set(paths) == {"random", "medium", "medium-replay", "medium-expert"}
    for kind, path in paths.items():
        ds = load_dataset(path)
        assert ds.env_id == "Hopper-v5" and ds.obs_dim == 11 and ds.act_dim == 3
        assert ds.size >= (200 if kind == "medium-replay" else 600)
    record = json.loads((tmp_path / "a" / "hopper" / GENERATION_FILE).read_text())
    assert record["seed"] == 3 and record["policies"]["snapshot_steps"]["medium"] == 200
    assert record["policies"]["snapshot_steps"]["expert"] == 300
    assert {"random", "medium", "expert", "medium_replay"} <= set(record["returns"])
    assert record["timings_s"]["sac_train"] > 0
    rebuilt = make_mujoco_datasets("hopper", tmp_path / "b", progress=False, **kwargs)  # type: ignore[arg-type]
    again = json.loads((tmp_path / "b" / "hopper" / GENERATION_FILE).read_text())
    assert again["policies"]["sha256"] == record["policies"]["sha256"]
    for kind in paths:
        assert load_dataset(rebuilt[kind]).fingerprint() == load_dataset(paths[kind]).fingerprint()


def test_numpy_actor_matches_the_torch_actor() -> None:
    pytest.importorskip("mujoco")
    import torch

    from training.data.sac import NumpyActor, train_sac

    state, _ = train_sac("Hopper-v5", 0, seed=0)
    actor = NumpyActor(state["actor_npz"]())
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    with torch.no_grad():
        mean = state["actor"](torch.as_tensor(obs)).chunk(2, dim=-1)[0]
    assert np.allclose(actor.act(obs), np.tanh(mean.numpy()), atol=1e-5)  # Hopper's bounds are [-1, 1]
