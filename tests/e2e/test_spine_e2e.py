"""The whole walk through the CLI: tiny dataset → a few hundred steps → export → publish → serve → /act."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import TINY_CONFIG
from tests.helpers import qipo_server

QIPO = [sys.executable, "-m", "service.cli"]


def qipo(*args: str, cwd: Path) -> str:
    out = subprocess.run([*QIPO, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert out.returncode == 0, f"qipo {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_dataset_to_act_through_the_cli(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": str(repo)}
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    qipo(
        "data",
        "make",
        "pendulum",
        "--out",
        str(tmp_path / "data"),
        "--kinds",
        "mixed",
        "--episodes",
        "5",
        cwd=repo,
    )
    data = tmp_path / "data/pendulum/mixed-v0"
    qipo(
        "train",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(tmp_path / "tiny.json"),
        "--eval-episodes",
        "2",
        "--threads",
        "1",
        cwd=repo,
    )
    assert (tmp_path / "run/checkpoint.pt").exists() and (tmp_path / "run/learning_curves.png").exists()
    assert json.loads((tmp_path / "run/eval.json").read_text())["episodes"] == 2
    qipo("export", str(tmp_path / "run"), "--out", str(tmp_path / "artifact"), cwd=repo)
    registry = str(tmp_path / "registry")
    qipo(
        "registry",
        "publish",
        str(tmp_path / "artifact"),
        "--registry",
        registry,
        "--alias",
        "production",
        cwd=repo,
    )
    assert "production" in qipo("registry", "list", "--registry", registry, cwd=repo)

    args = ["--registry", registry]
    with qipo_server(args, cwd=repo, env=env | {"QIPO_CACHE_DIR": str(tmp_path / "cache")}) as url:
        body = httpx.post(f"{url}/act", json={"state": [1.0, 0.0, 0.0]}).json()
        assert body["version"] == 1 and -2.0 <= body["action"][0] <= 2.0


def test_cli_errors_are_one_readable_line(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [*QIPO, "train", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: ") and "qipo data make" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run(
        [*QIPO, "registry", "promote", "nope", "3", "--registry", str(tmp_path / "reg")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
    )
    assert out.returncode == 1 and "no version 3" in out.stderr
