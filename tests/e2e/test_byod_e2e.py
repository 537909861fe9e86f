"""Bring your own dataset, as a new user would: a small D4RL-layout HDF5 file for Reacher-v5 (the env
named only in `attrs["env"]`, no bounds declared) → `qipo train` (evaluated in Reacher-v5 at the end) →
`qipo export` (named after the file) → `registry publish` → `qipo serve` (no model named) → `/act` with a
Reacher observation → `qipo eval --server` with no `--env`, which equals the in-process evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.byod_data import ENV_ID, write_reacher_hdf5
from tests.helpers import qipo_server

QIPO = [sys.executable, "-m", "service.cli"]
TINY = {
    "behavior_steps": 120,
    "critic_steps": 40,
    "improve_steps": 40,
    "renew_every": 20,
    "support_size": 4,
    "critic_support": 4,
    "batch_size": 64,
    "improve_batch_size": 16,
    "solver_steps": 4,
    "network.hidden": 32,
    "network.blocks": 1,
    "network.time_dim": 8,
    "network.critic_hidden": 32,
    "log_every": 40,
}


def qipo(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*QIPO, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    assert out.returncode == 0, f"qipo {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_reacher_file_to_served_policy(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {
        "PYTHONPATH": str(repo),
        "OMP_NUM_THREADS": "1",
        "QIPO_CACHE_DIR": str(tmp_path / "c"),
    }
    env.pop("QIPO_MODEL_NAME", None)
    data = write_reacher_hdf5(tmp_path / "reacher-mixed.hdf5", episodes=8)

    # (what `qipo data inspect` says of such a file is checked in tests/training/test_dataset_contract.py)
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    trained = qipo(
        "train",
        str(data),
        "--out",
        "run",
        "--eval-episodes",
        "2",
        "--threads",
        "1",
        *sets,
        cwd=tmp_path,
        env=env,
    )
    assert f"reacher-mixed in {ENV_ID}: return" in trained.stdout
    assert "warning" not in trained.stderr and "\r" not in trained.stderr  # no bars in a captured log
    assert json.loads((tmp_path / "run/eval.json").read_text())["env_id"] == ENV_ID

    qipo("export", "run", "--out", "artifact", cwd=tmp_path, env=env)
    manifest = json.loads((tmp_path / "artifact/manifest.json").read_text())
    assert manifest["name"] == "reacher-mixed" and manifest["env_id"] == ENV_ID
    assert (manifest["obs_dim"], manifest["act_dim"]) == (10, 2)
    assert manifest["action_low"] == [-1.0, -1.0] and manifest["action_high"] == [1.0, 1.0]

    qipo(
        "registry",
        "publish",
        "artifact",
        "--registry",
        "registry",
        "--alias",
        "production",
        cwd=tmp_path,
        env=env,
    )
    listing = json.loads(
        qipo("registry", "list", "--json", "--registry", "registry", cwd=tmp_path, env=env).stdout
    )
    assert [(r["model"], r["env_id"], r["aliases"]) for r in listing] == [
        ("reacher-mixed", ENV_ID, ["production"])
    ]

    with qipo_server(["--registry", "registry"], cwd=tmp_path, env=env) as url:
        import gymnasium as gym

        reacher = gym.make(ENV_ID)
        obs, _ = reacher.reset(seed=0)
        reacher.close()
        body = httpx.post(f"{url}/act", json={"state": obs.tolist(), "seed": 3}).json()
        assert body["model"] == "reacher-mixed" and body["version"] == 1
        assert len(body["action"]) == 2 and all(-1.0 <= a <= 1.0 for a in body["action"])

        evaluated = ["eval", "artifact", "--server", url, "--episodes", "2", "--json", "both.json"]
        qipo(*evaluated, cwd=tmp_path, env=env)
        both = json.loads((tmp_path / "both.json").read_text())
        local, remote = both["artifact"], both[url]
        assert local["env_id"] == remote["env_id"] == ENV_ID
        assert remote["returns"] == local["returns"]


def test_policy_in_the_wrong_env_is_one_line(tmp_path: Path) -> None:
    """An artifact recording Reacher-v5 evaluated in Pendulum: one line naming both shapes, no traceback."""
    pytest.importorskip("torch")
    from tests.service.registry_fixtures import build_artifact

    repo = Path(__file__).resolve().parents[2]
    artifact = build_artifact(tmp_path / "a", seed=0, obs_dim=10, act_dim=2)
    out = subprocess.run(
        [*QIPO, "eval", str(artifact), "--env", "Pendulum-v1", "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
        env=os.environ | {"PYTHONPATH": str(repo)},
    )
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "expects obs_dim=10, act_dim=2; Pendulum-v1 gives obs_dim=3, act_dim=1" in out.stderr
