"""The BC-vs-QIPO bench's arithmetic and report (training/bench/pendulum.py; the runs are `make bench-rl`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from training.bench import pendulum

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "bench" / "pendulum.json"


def test_run_config_layers_base_variant_set_and_quick() -> None:
    diff = pendulum.run_config("pendulum", "qipo-diff", 2, False, {"beta": 1.0})
    assert (diff.variant, diff.seed, diff.beta, diff.behavior_steps, diff.improve_steps) == (
        "qipo-diff", 2, 1.0, 6000, 2000
    )  # fmt: skip
    ot = pendulum.run_config("pendulum", "qipo-ot", 0, False, {})
    assert (ot.behavior_steps, ot.critic_steps, ot.improve_steps) == (3000, 2500, 1500)
    quick = pendulum.run_config("pendulum", "qipo-diff", 0, True, {"behavior_steps": 9})
    assert quick.behavior_steps == 300 and quick.renew_every == 50  # --quick wins over --set
    mujoco = pendulum.run_config("hopper", "qipo-ot", 1, False, {})
    assert mujoco.reward_scale == "auto" and mujoco.behavior_steps == 10_000  # the library defaults


def test_stats_round_and_need_every_value() -> None:
    assert pendulum.stats([1.0, 2.0, 4.0]) == {"mean": 2.3, "std": 1.2, "n": 3}
    assert pendulum.stats([]) is None
    assert pendulum.stats([1.0, None]) is None


def test_summary_and_tables_of_the_committed_runs_regenerate() -> None:
    result = json.loads(COMMITTED.read_text())
    assert pendulum.summarise(result["runs"]) == result["summary"]


def test_markdown_tables_match_the_committed_report(tmp_path: Path) -> None:
    """Everything up to the config line (which records the budgets of today's code, not the run's)."""
    result = json.loads(COMMITTED.read_text())
    pendulum.write_markdown(tmp_path / "pendulum.md", result)
    written = (tmp_path / "pendulum.md").read_text().split("\nConfig: ")[0]
    assert written == COMMITTED.with_suffix(".md").read_text().split("\nConfig: ")[0]
    assert "| -667.4 ± 64.2 | **-192.4 ± 42.6** |" in written  # the higher mean of BC and QIPO in bold


def test_best_bolds_only_the_higher_mean() -> None:
    low, high = {"mean": 1.0, "std": 0.5}, {"mean": 2.0, "std": 0.0}
    assert pendulum._best(high, low) == "**2.0 ± 0.0**"
    assert pendulum._best(low, high) == "1.0 ± 0.5"
    assert pendulum._best(None, high) == "–"


def test_arguments_names_and_data_root() -> None:
    args = pendulum.parse_args([])
    assert (args.env, args.seeds, args.variants, args.episodes) == (
        "pendulum",
        [0, 1, 2],
        ["qipo-ot", "qipo-diff"],
        10,
    )
    assert pendulum.file_stem(args) == "pendulum"
    assert pendulum.data_root(args) == Path("build/bench-rl/data")
    args = pendulum.parse_args(["--env", "hopper", "--quick", "--kinds", "medium"])
    assert pendulum.file_stem(args) == "mujoco-hopper-quick" and pendulum.data_root(args) == Path("data")
    assert pendulum.file_stem(pendulum.parse_args(["--name", "mine"])) == "mine"


def test_missing_mujoco_dataset_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="qipo data make hopper"):
        pendulum.datasets_for("hopper", ["medium"], tmp_path)
    (tmp_path / "hopper" / "medium-v0").mkdir(parents=True)
    assert pendulum.datasets_for("hopper", ["medium"], tmp_path) == {
        "medium": tmp_path / "hopper" / "medium-v0"
    }


def test_result_record_names_the_entry_point_command() -> None:
    data: Any = SimpleNamespace(env_id="Pendulum-v1", describe=lambda: {"transitions": 3})
    argv = ["--seeds", "0", "--set", '{"beta": 1}']
    args = pendulum.parse_args(argv)
    row = {"dataset": "mixed", "variant": "qipo-ot", "seed": 0}
    row |= {f"{a}_{m}": 1.0 for a in ("bc", "qipo") for m in ("return", "normalized", "d4rl_style")}
    result = pendulum.result_record(args, {"mixed": data}, {"beta": 1}, [row], argv)
    assert result["command"] == "python scripts/bench_rl.py --seeds 0 --set '{\"beta\": 1}'"
    assert result["env_id"] == "Pendulum-v1" and result["datasets"] == {"mixed": {"transitions": 3}}
    assert result["summary"]["mixed/qipo-ot"]["qipo_return"] == {"mean": 1.0, "std": 0.0, "n": 1}
