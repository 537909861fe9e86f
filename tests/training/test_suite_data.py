"""The benchmark suite's own datasets: the Reacher mixed data (shares, short episodes, deterministic by
seed), `qipo data make` for every suite env, and the grid taking each env's datasets from the suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.bench.grid import GridError, plan
from training.data import load_dataset
from training.data.suite import FAMILIES, GRID_SUITE


@pytest.fixture(scope="module")
def reacher_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mujoco", reason="Reacher-v5 needs gymnasium[mujoco] (the train extra)")
    from training.data.reacher import make_reacher_datasets

    root = tmp_path_factory.mktemp("reacher")
    make_reacher_datasets(root, ("mixed", "expert"), episodes=20, seed=3, progress=False)
    return root


def test_reacher_mixed_has_the_stated_shares_and_short_timed_out_episodes(reacher_root: Path) -> None:
    ds = load_dataset(reacher_root / "reacher" / "mixed-v0")
    assert ds.env_id == "Reacher-v5" and (ds.obs_dim, ds.act_dim) == (10, 2) and ds.size == 20 * 50
    assert ds.timeouts.sum() == 20 and not ds.terminals.any()  # 50-step episodes, all cut by the time limit
    record = json.loads((reacher_root / "reacher" / "generation.json").read_text())
    parts = record["datasets"]["mixed"]["parts"]
    assert {p: parts[p]["episodes"] for p in parts} == {"expert": 4, "noisy": 6, "random": 10}
    assert parts["expert"]["mean_return"] > parts["noisy"]["mean_return"] > parts["random"]["mean_return"]
    assert ds.ref_scores == {"ref_min_score": -42.6, "ref_max_score": -5.4}


def test_reacher_rebuild_is_byte_identical_and_prefix_stable(reacher_root: Path, tmp_path: Path) -> None:
    from training.data.reacher import make_reacher_datasets

    again = make_reacher_datasets(tmp_path, ("mixed",), episodes=20, seed=3, progress=False)["mixed"]
    assert (
        load_dataset(again).fingerprint() == load_dataset(reacher_root / "reacher" / "mixed-v0").fingerprint()
    )
    other = make_reacher_datasets(tmp_path / "s4", ("mixed",), episodes=20, seed=4, progress=False)["mixed"]
    assert load_dataset(other).fingerprint() != load_dataset(again).fingerprint()
    longer = make_reacher_datasets(tmp_path / "long", ("expert",), episodes=30, seed=3, progress=False)
    short, long = load_dataset(reacher_root / "reacher" / "expert-v0"), load_dataset(longer["expert"])
    assert np.array_equal(long.actions[: short.size], short.actions)  # episode i depends on (seed, kind, i)


def test_data_make_cli_writes_reacher_and_refuses_unknown_kinds(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    from typer.testing import CliRunner

    from training.cli import data_app

    ok = CliRunner().invoke(
        data_app, ["make", "reacher", "--out", str(tmp_path), "--kinds", "random", "--episodes", "2", "-q"]
    )
    assert ok.exit_code == 0, ok.output
    assert load_dataset(tmp_path / "reacher" / "random-v0").size == 100
    bad = CliRunner().invoke(data_app, ["make", "reacher", "--out", str(tmp_path), "--kinds", "medium"])
    assert bad.exit_code == 1 and "`qipo data make reacher` writes" in bad.output
    unknown = CliRunner().invoke(data_app, ["make", "ant", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown env 'ant'" in unknown.output


def test_every_suite_env_builds_here() -> None:
    """Each family's env id exists in this gymnasium (Walker2d too, though its actor is not committed)."""
    pytest.importorskip("mujoco")
    from training.data.envs import env_info

    for family in FAMILIES.values():
        assert env_info(family.env_id).act_dim >= 1
        assert set(family.grid) <= set(family.kinds)


def test_grid_runs_each_env_on_its_suite_datasets_by_default() -> None:
    specs = plan(["qipo-ot"], list(FAMILIES), None, [0])
    assert [(s.env, s.dataset) for s in specs] == list(GRID_SUITE)
    assert ("reacher", "mixed") in GRID_SUITE and ("pendulum", "mixed") in GRID_SUITE
    assert len(GRID_SUITE) >= 9
    with pytest.raises(GridError, match=r"`qipo data make reacher` writes"):
        plan(["qipo-ot"], ["reacher"], ["medium"], [0])
