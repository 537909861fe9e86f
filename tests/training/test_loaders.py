"""One loader for Minari directories, D4RL-style HDF5 and .npz; bad files are refused by key and row."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from training.data import DatasetError, load_dataset
from training.data.dataset import save_npz


def arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[9] = timeouts[-1] = True
    return {
        "observations": rng.standard_normal((n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
        "next_observations": rng.standard_normal((n, 3)).astype(np.float32),
    }


def test_minari_roundtrip(pendulum_dataset_dir: Path) -> None:
    ds = load_dataset(pendulum_dataset_dir)
    assert ds.size == 10 * 200 and ds.obs_dim == 3 and ds.act_dim == 1
    assert ds.env_id == "Pendulum-v1"
    assert ds.timeouts.sum() == 10 and not ds.terminals.any()
    assert np.allclose(ds.next_observations[:-1][~ds.timeouts[:-1]], ds.observations[1:][~ds.timeouts[:-1]])
    assert list(ds.action_low) == [-2.0] and list(ds.action_high) == [2.0]


def test_npz_and_hdf5_give_the_same_dataset(tmp_path: Path) -> None:
    data = arrays()
    np.savez(tmp_path / "d.npz", **data)
    with h5py.File(tmp_path / "d.hdf5", "w") as fh:
        for key, value in data.items():
            fh[key] = value
    a, b = load_dataset(tmp_path / "d.npz"), load_dataset(tmp_path / "d.hdf5")
    assert a.fingerprint() == b.fingerprint()
    assert len(a.episode_returns()) == 2


def test_npz_roundtrip_keeps_bounds(tmp_path: Path, pendulum_dataset_dir: Path) -> None:
    ds = load_dataset(pendulum_dataset_dir)
    back = load_dataset(save_npz(ds, tmp_path / "p.npz"))
    assert back.fingerprint() == ds.fingerprint() and back.env_id == "Pendulum-v1"
    assert list(back.action_high) == [2.0]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("rewards"), r"missing key\(s\) \['rewards'\]"),
        (lambda d: d.__setitem__("actions", d["actions"][:-1]), "key 'actions' has 19 rows"),
        (lambda d: d["observations"].__setitem__((7, 1), np.nan), "key 'observations' has NaN/Inf at row 7"),
        (lambda d: d["rewards"].__setitem__(3, np.inf), "key 'rewards' has NaN/Inf at row 3"),
    ],
)
def test_bad_files_are_refused_naming_key_and_row(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = arrays()
    mutate(data)
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "bad.npz")


def test_actions_outside_declared_bounds_are_refused(tmp_path: Path) -> None:
    data = arrays()
    data["actions"][5, 1] = 3.0
    np.savez(tmp_path / "oob.npz", **data, action_low=np.array([-1, -1]), action_high=np.array([1, 1]))
    with pytest.raises(DatasetError, match=r"row 5 dim 1 .* outside the declared bounds"):
        load_dataset(tmp_path / "oob.npz")


def test_unknown_path_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="qipo data make"):
        load_dataset(tmp_path / "nope.npz")
