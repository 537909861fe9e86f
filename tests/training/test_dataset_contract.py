"""The dataset contract: where the env id and the action bounds come from (and `inspect` says so), D4RL
files without `next_observations`, and Minari datasets by id from the local cache."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from training.data import DatasetError, load_dataset
from training.data.dataset import BOUNDS_DECLARED, BOUNDS_INFERRED, BoundsInferredWarning

CAR = "MountainCarContinuous-v0"  # classic control: obs 2, act 1 in [-1, 1]


def episodes_arrays(
    lengths: tuple[int, ...] = (5, 4, 6), obs_dim: int = 2, terminal_last: bool = False
) -> dict:
    """Episodes back to back in D4RL's layout; s' is known exactly: observation k of episode e is
    (e, k, ...), so a shifted next state that crosses an episode is easy to spot."""
    obs, nxt, term, tout = [], [], [], []
    for e, n in enumerate(lengths):
        states = np.array([[e, k] + [0.0] * (obs_dim - 2) for k in range(n + 1)], np.float32)
        obs.append(states[:-1])
        nxt.append(states[1:])
        ends = np.zeros(n, bool)
        ends[-1] = True
        is_terminal = terminal_last and e == len(lengths) - 1
        term.append(ends & is_terminal)
        tout.append(ends & (not is_terminal))
    size = sum(lengths)
    rng = np.random.default_rng(0)
    return {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(nxt),
        "actions": rng.uniform(-0.9, 0.9, (size, 1)).astype(np.float32),
        "rewards": np.arange(size, dtype=np.float32),
        "terminals": np.concatenate(term),
        "timeouts": np.concatenate(tout),
    }


def write_hdf5(path: Path, arrays: dict[str, np.ndarray], **attrs: object) -> Path:
    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh[key] = value
        fh.attrs.update(attrs)
    return path


@pytest.mark.parametrize("attr", ["env_id", "env", "env_name"])
def test_hdf5_env_id_from_any_d4rl_attribute(tmp_path: Path, attr: str) -> None:
    ds = load_dataset(write_hdf5(tmp_path / "d.hdf5", episodes_arrays(), **{attr: CAR}))
    assert ds.env_id == CAR and ds.env_source == f"HDF5 attribute {attr!r}"
    # undeclared bounds come from the env's action space, silently
    assert ds.action_low.tolist() == [-1.0] and ds.action_high.tolist() == [1.0]
    assert ds.bounds_source == f"action space of {CAR}"


def test_npz_meta_env_id_and_the_env_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **episodes_arrays(), meta=np.array(json.dumps({"env_id": "Pendulum-v1"})))
    ds = load_dataset(path)
    assert ds.env_id == "Pendulum-v1" and ds.env_source == "npz meta 'env_id'"
    assert ds.action_high.tolist() == [2.0] and ds.bounds_source == "action space of Pendulum-v1"
    ds = load_dataset(path, env_id=CAR)
    assert ds.env_id == CAR and ds.env_source == "--env" and ds.action_high.tolist() == [1.0]


def test_declared_bounds_win_and_are_labelled(tmp_path: Path) -> None:
    arrays = episodes_arrays() | {"action_low": np.array([-0.95]), "action_high": np.array([0.95])}
    ds = load_dataset(write_hdf5(tmp_path / "d.hdf5", arrays, env=CAR))
    assert ds.bounds_source == BOUNDS_DECLARED and ds.action_high.tolist() == pytest.approx([0.95])


def test_undeclared_bounds_without_env_are_inferred_with_a_warning(tmp_path: Path) -> None:
    arrays = episodes_arrays()
    with pytest.warns(BoundsInferredWarning, match="clipping range.*pass --env"):
        ds = load_dataset(write_hdf5(tmp_path / "d.hdf5", arrays))
    assert ds.env_id is None and ds.bounds_source == BOUNDS_INFERRED
    assert ds.action_low[0] == arrays["actions"].min() and ds.action_high[0] == arrays["actions"].max()
    with pytest.warns(BoundsInferredWarning, match="env 'Nope-v3' cannot give them"):
        load_dataset(write_hdf5(tmp_path / "e.hdf5", arrays, env="Nope-v3"))


def test_inspect_shows_env_bounds_and_their_sources(tmp_path: Path) -> None:
    from training.cli import data_app

    path = write_hdf5(tmp_path / "d.hdf5", episodes_arrays(), env=CAR)
    result = CliRunner().invoke(data_app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["env_id"] == CAR and summary["env_id_source"] == "HDF5 attribute 'env'"
    assert summary["action_low"] == [-1.0] and summary["action_high"] == [1.0]
    assert summary["action_bounds_source"] == f"action space of {CAR}"

    bare = write_hdf5(tmp_path / "bare.hdf5", episodes_arrays())
    result = CliRunner().invoke(data_app, ["inspect", str(bare)])
    assert result.exit_code == 0
    assert "warning: " in result.stderr and "action bounds are not declared" in result.stderr
    assert json.loads(result.stdout)["action_bounds_source"] == BOUNDS_INFERRED


@pytest.mark.parametrize("terminal_last", [False, True])
def test_missing_next_observations_never_cross_an_episode(tmp_path: Path, terminal_last: bool) -> None:
    """The same file with and without the key: without it, the rows whose next state is unknown (every
    time-out and a non-terminal last row) are dropped, the rest are identical transitions."""
    full = episodes_arrays(terminal_last=terminal_last)
    with_key = load_dataset(write_hdf5(tmp_path / "with.hdf5", full, env=CAR))
    without = {k: v for k, v in full.items() if k != "next_observations"}
    shifted = load_dataset(write_hdf5(tmp_path / "without.hdf5", without, env=CAR))

    keep = ~full["timeouts"]
    keep[-1] = terminal_last
    assert shifted.size == int(keep.sum()) == with_key.size - 3 + int(terminal_last)
    np.testing.assert_array_equal(shifted.observations, with_key.observations[keep])
    np.testing.assert_array_equal(shifted.actions, with_key.actions[keep])
    np.testing.assert_array_equal(shifted.rewards, with_key.rewards[keep])
    np.testing.assert_array_equal(shifted.terminals, with_key.terminals[keep])
    # every usable next state is the true one: none comes from the next episode
    live = ~shifted.terminals
    np.testing.assert_array_equal(shifted.next_observations[live], with_key.next_observations[keep][live])
    assert (shifted.next_observations[live, 0] == shifted.observations[live, 0]).all()  # same episode
    # episodes keep their ends: the row before each dropped time-out is now a truncated end
    assert len(shifted.episode_returns()) == 3


def write_minari_cache(root: Path, dataset_id: str) -> None:
    import gymnasium as gym

    from training.data.minari_io import rollout, write_minari

    env = gym.make("Pendulum-v1")
    env.action_space.seed(0)
    episodes = [rollout(env, lambda obs: env.action_space.sample(), seed) for seed in range(2)]
    env.close()
    write_minari(root, dataset_id, episodes, "Pendulum-v1", algorithm="random", description="test")


def test_minari_dataset_by_id_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("minari")
    root = tmp_path / "minari-cache"
    write_minari_cache(root, "acme/pendulum/random-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    ds = load_dataset("acme/pendulum/random-v0")
    assert ds.size == 400 and ds.env_id == "Pendulum-v1" and ds.env_source == "Minari env_spec"
    assert ds.action_high.tolist() == [2.0] and ds.bounds_source == BOUNDS_DECLARED

    with pytest.raises(
        DatasetError, match=r"not in the local cache .*minari download acme/pendulum/expert-v0"
    ):
        load_dataset("acme/pendulum/expert-v0")


def test_missing_minari_id_is_one_line_in_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("minari")
    from training.cli import data_app

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(data_app, ["inspect", "mujoco/hopper/medium-v0"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: Minari dataset 'mujoco/hopper/medium-v0' is not in the local cache"
    )
    assert "minari download mujoco/hopper/medium-v0" in result.stderr and result.stderr.count("\n") == 1
