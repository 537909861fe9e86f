"""The scale bench's synthetic data, plan and report (training/bench/scale.py; runs: `make bench-scale`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from training.bench import scale

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "bench" / "scale.json"


def test_hopper_shaped_episodes_chain_and_end() -> None:
    d = scale.hopper_shaped(2500, seed=3)
    assert d["observations"].shape == (2500, scale.OBS) and d["actions"].shape == (2500, scale.ACT)
    assert all(v.dtype in (np.float32, np.bool_) for k, v in d.items())
    ends = np.flatnonzero(d["terminals"] | d["timeouts"])
    assert ends[-1] == 2499 and d["timeouts"].sum() == 1 and d["timeouts"][-1]
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert lengths[:-1].min() >= 100 and lengths[:-1].max() <= 1000
    inside = np.setdiff1d(np.arange(2499), ends)  # s' of a step is the next step's s inside an episode
    np.testing.assert_array_equal(d["next_observations"][inside], d["observations"][inside + 1])
    np.testing.assert_array_equal(scale.hopper_shaped(2500, seed=3)["actions"], d["actions"])


def test_dataset_file_is_written_once(tmp_path: Path) -> None:
    path = scale.dataset_file(tmp_path, 300)
    assert path.name == "hopper-synthetic-300.npz" and not list(tmp_path.glob("*.tmp.npz"))
    stamp = path.stat().st_mtime_ns
    assert scale.dataset_file(tmp_path, 300) == path and path.stat().st_mtime_ns == stamp
    with np.load(path) as f:
        assert json.loads(str(f["meta"])) == {"name": "hopper-synthetic-300"} and len(f["rewards"]) == 300


def test_plan_and_config() -> None:
    assert scale.plan(False) == (50_000, [200_000, 2_000_000], 300, 100)
    assert scale.plan(True) == (4_000, [4_000, 20_000], 20, 10)
    cfg = scale.bench_config(300, 100, "lazy")
    assert cfg["renew_every"] == cfg["improve_steps"] == 100 and cfg["renewal"] == "lazy"
    assert scale.bench_config(1, 1)["renewal"] == "eager"


def test_render_regenerates_the_committed_report(tmp_path: Path) -> None:
    shutil.copy(COMMITTED, tmp_path / "scale.json")
    scale.main(["render", str(tmp_path / "scale.json")])
    assert (tmp_path / "scale.md").read_text() == COMMITTED.with_suffix(".md").read_text()


def test_markdown_verdict_and_bytes_per_transition() -> None:
    result = json.loads(COMMITTED.read_text())
    result |= {"quick": True, "renewal_target_met": False}
    result["sizes"] = [
        result["sizes"][0] | {"transitions": 1000, "peak_rss_gib": 1.0},
        result["sizes"][-1] | {"transitions": 2000, "peak_rss_gib": 2.0},
    ]
    md = scale.markdown(result)
    assert "(quick smoke run" in md and "misses the ≤ 0.6 target" in md
    assert f"**{1024**3 / 1000:,.0f} bytes a transition**" in md


def test_the_worker_runs_as_a_module() -> None:
    """torchrun starts each rank as `python -m training.bench.scale worker …`."""
    done = subprocess.run(
        [sys.executable, "-m", "training.bench.scale", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "--quick" in done.stdout
