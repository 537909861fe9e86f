"""The offline-RL grid: budget scaling, resumability, the summary on synthetic records, and a real `--quick`
run of every algorithm on a tiny Hopper dataset (QIPO always; the d3rlpy peers when d3rlpy is installed)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.bench import grid_cli
from training.bench.grid import (
    GridError,
    GridSettings,
    RunSpec,
    budget,
    eval_steps,
    plan,
    qipo_config,
    record_path,
    run_grid,
    scale_budget,
    write_json_atomic,
)
from training.bench.summary import load_records, markdown, summarise, write_summary
from training.config import QIPOConfig

# What every record must carry.
FIELDS = {"algo", "env", "dataset", "seed", "steps", "final_return", "last3_return", "normalized_own"}
FIELDS |= {"normalized_d4rl_style", "wall_s", "config", "curve", "eval_seeds"}


def test_eval_steps_are_evenly_spaced_and_end_at_the_end() -> None:
    assert eval_steps(0, 100, 5) == [20, 40, 60, 80, 100]
    assert eval_steps(1000, 1600, 3) == [1200, 1400, 1600]
    assert eval_steps(10, 12, 5) == [11, 12]  # shorter than n: each step once
    assert eval_steps(7, 7, 5) == []


def test_steps_scale_every_phase_and_the_renewal_period_together() -> None:
    base = QIPOConfig()
    cfg = scale_budget(base, 2600)
    assert budget(cfg) == 2600
    for name in ("behavior_steps", "critic_steps", "improve_steps"):
        assert getattr(cfg, name) == pytest.approx(getattr(base, name) * 2600 / budget(base), abs=1)
    assert cfg.renew_every == round(base.renew_every * 2600 / budget(base))
    # --set comes first, then the scaling; the seed and variant are the run's
    settings = GridSettings(steps=90, overrides={"beta": 1.5, "improve_steps": 0})
    cfg = qipo_config(4, settings)
    assert (cfg.seed, cfg.beta, cfg.variant, cfg.improve_steps, budget(cfg)) == (4, 1.5, "qipo-ot", 0, 90)
    assert budget(qipo_config(0, GridSettings())) == budget(base)  # no --steps: the library defaults
    with pytest.raises(GridError, match="at least 3"):
        scale_budget(base, 2)


def test_plan_refuses_unknown_names_and_runs_env_major() -> None:
    specs = plan(["qipo-ot", "iql"], ["hopper", "halfcheetah"], ["medium"], [0, 1])
    assert [s.env for s in specs] == ["hopper"] * 4 + ["halfcheetah"] * 4
    with pytest.raises(GridError, match="bc comes with qipo-ot"):
        plan(["bc"], ["hopper"], ["medium"], [0])
    with pytest.raises(GridError, match="unknown env 'ant'"):
        plan(["iql"], ["ant"], ["medium"], [0])


def test_runs_with_a_record_are_skipped_and_only_the_rest_need_data(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    specs = plan(["qipo-ot", "td3bc"], ["hopper"], ["medium"], [0, 1])
    for spec in specs:
        if spec.seed == 0:
            write_json_atomic(record_path(out, spec.algo, spec.env, spec.dataset, 0), {"done": True})
    logs: list[str] = []
    done_only = [s for s in specs if s.seed == 0]
    assert run_grid(done_only, tmp_path / "no-data", out, GridSettings(), logs.append) == []
    assert len(logs) == 2 and all(line.startswith("skip ") for line in logs)
    # seed 1 has no record: it must run, so its missing dataset is reported before anything trains
    with pytest.raises(GridError, match=r"hopper/medium-v0.*qipo data make"):
        run_grid(specs, tmp_path / "no-data", out, GridSettings(), logs.append)
    assert not list(out.glob(".*.tmp"))


def synthetic_record(
    algo: str, env: str, dataset: str, seed: int, d4rl: float, own: float | None
) -> dict[str, Any]:
    return {
        "algo": algo,
        "env": env,
        "dataset": dataset,
        "seed": seed,
        "steps": 26_000 if algo != "bc" else 10_000,
        "final_return": 10 * d4rl,
        "last3_return": 10 * d4rl - 1,
        "normalized_own": own,
        "normalized_d4rl_style": d4rl,
        "wall_s": 1.0,
        "config": {},
        "curve": [],
        "eval_seeds": list(range(10)),
        "episodes": 10,
        "machine": "test box",
        "command": f"python scripts/bench_grid.py run --envs {env} --datasets {dataset} --algos {algo} "
        f"--seeds {seed} --evals 3",
    } | ({"schedule": {"k1": 10_000, "k2": 10_000, "k3": 6_000}} if algo in ("bc", "qipo-ot") else {})


def test_summary_means_bold_best_and_missing_cells(tmp_path: Path) -> None:
    records = [
        synthetic_record("qipo-ot", "hopper", "medium", 0, 60.0, 50.0),
        synthetic_record("qipo-ot", "hopper", "medium", 1, 70.0, 54.0),
        synthetic_record("iql", "hopper", "medium", 0, 66.0, 58.0),
        synthetic_record("bc", "hopper", "medium", 0, 40.0, 30.0),
        # medium-expert: no IQL run yet; halfcheetah comes after hopper whatever the order here
        synthetic_record("qipo-ot", "halfcheetah", "medium", 0, 45.0, None),
        synthetic_record("qipo-ot", "hopper", "medium-expert", 0, 90.0, 80.0),
        synthetic_record("bc", "hopper", "medium-expert", 0, 95.0, 85.0),
    ]
    s = summarise(records)
    assert s["algos"] == ["bc", "qipo-ot", "iql"]
    assert [(r["env"], r["dataset"]) for r in s["rows"]] == [
        ("hopper", "medium"),
        ("hopper", "medium-expert"),
        ("halfcheetah", "medium"),
    ]
    medium = s["rows"][0]
    cell = medium["cells"]["qipo-ot"]["normalized_d4rl_style"]
    assert cell == {"mean": 65.0, "std": 5.0, "n": 2}
    assert medium["cells"]["qipo-ot"]["seeds"] == [0, 1]
    assert medium["best"] == {"normalized_d4rl_style": "iql", "normalized_own": "iql"}
    assert s["rows"][1]["best"]["normalized_d4rl_style"] == "bc"
    assert s["rows"][2]["cells"]["qipo-ot"]["normalized_own"] is None
    assert s["per_algo"]["qipo-ot"]["normalized_d4rl_style"] == pytest.approx((65 + 90 + 45) / 3)
    assert s["per_algo"]["qipo-ot"]["normalized_d4rl_style_common_cells"] == 65.0  # only hopper/medium
    assert s["per_algo"]["iql"]["cells"] == 1 and s["common_cells"] == ["hopper/medium"]
    assert s["budget"] == {"bc": [10_000], "qipo-ot": [26_000], "iql": [26_000]}
    # seven runs, one way of running them: one line, its cell named by placeholders
    assert s["commands"] == [
        "python scripts/bench_grid.py run --envs ENV --datasets DATASET --algos ALGO --seeds SEED --evals 3"
    ]

    md = markdown(s, "python scripts/bench_grid.py summarise")
    table = md.split("## Normalised score, D4RL-style")[1].split("## ")[0]
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| BC (QIPO warm-up) | QIPO-OT | IQL (d3rlpy) |" in table
    assert rows["| hopper / medium"].endswith("| 40.0 ± 0.0 (1) | 65.0 ± 5.0 (2) | **66.0 ± 0.0** (1) |")
    assert rows["| hopper / medium-expert"].endswith("| **95.0 ± 0.0** (1) | 90.0 ± 0.0 (1) | – |")
    assert rows["| halfcheetah / medium"].endswith("| – | **45.0 ± 0.0** (1) | – |")
    assert "mean over the 1 cells every algorithm has" in table
    own = md.split("## Normalised score, own")[1]
    assert "| halfcheetah / medium | – | – | – |" in own  # no own refs: a missing score, not a zero
    # QIPO against its own BC: only seeds that have both, paired
    qipo_vs_bc = s["comparisons"][0]["rows"]
    assert [(p["dataset"], p["seeds"], p["gain_d4rl_style"]) for p in qipo_vs_bc] == [
        ("medium", [0], [20.0]),
        ("medium-expert", [0], [-5.0]),
    ]
    assert "| hopper / medium-expert | 900 vs 950 | -5.0 | -5.0 | 0/1 | 0/1 |" in md
    assert [(c["algo"], c["base"]) for c in s["comparisons"]] == [("qipo-ot", "bc")]  # only pairs present
    noisy = [*records, synthetic_record("qipo-ot-noise1", "hopper", "medium", 1, 64.0, 50.0)]
    s_noisy = summarise(noisy)
    assert [(c["base"], [r["seeds"] for r in c["rows"]]) for c in s_noisy["comparisons"]] == [
        ("bc", [[0], [0]]),
        ("qipo-ot-noise1", [[1]]),
    ]
    md_noisy = markdown(s_noisy, "cmd")
    assert "## QIPO-OT against QIPO-OT, full noise, seed by seed" in md_noisy
    assert "| hopper / medium | 700 vs 640 | +6.0 | +4.0 | 1/1 | 1/1 |" in md_noisy
    assert "source noise scaled by 1 (`action_noise`)" in md_noisy  # records without the field acted at 1
    assert "26,000" in md and "K1 10,000 + K2 10,000 + K3 6,000" in md and "test box" in md

    runs = tmp_path / "runs"
    runs.mkdir()
    for r in records:
        write_json_atomic(record_path(runs, r["algo"], r["env"], r["dataset"], r["seed"]), r)
    paths = write_summary(load_records(runs), tmp_path / "out", "cmd")
    saved = json.loads(paths["json"].read_text())
    assert len(saved["records"]) == len(records) and saved["summary"]["rows"][0]["best"] == medium["best"]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_summarise_cli_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert grid_cli.main(["summarise", "--runs", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "is not a folder of run records" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "broken.json").write_text("{")
    assert grid_cli.main(["summarise", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 2
    assert "broken.json is not valid JSON" in capsys.readouterr().err


def test_run_cli_settings_and_a_set_that_is_not_an_object(capsys: pytest.CaptureFixture[str]) -> None:
    args = grid_cli.build_parser().parse_args(["run", "--quick", "--evals", "3", "--set", '{"beta": 2}'])
    settings = grid_cli.grid_settings(args, "cmd")
    assert settings.steps == GridSettings.smoke().steps and settings.evals == 3
    assert settings.overrides == {"beta": 2} and settings.command == "cmd"
    args = grid_cli.build_parser().parse_args(["run", "--steps", "900"])
    assert grid_cli.grid_settings(args, "cmd").steps == 900
    assert grid_cli.main(["run", "--set", "[1]"]) == 2
    assert "--set must be a JSON object, got '[1]'" in capsys.readouterr().err


# ----- real runs on a tiny Hopper dataset ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~300 random-action Hopper-v5 transitions as data/hopper/medium-v0 (a Minari dir, with own refs)."""
    pytest.importorskip("mujoco", reason="the grid smoke runs Hopper-v5: needs the bench extra (mujoco)")
    from training.data.minari_io import write_minari
    from training.data.mujoco import rollouts

    root = tmp_path_factory.mktemp("grid-data")
    episodes = rollouts("Hopper-v5", None, 300, seed=0, desc="tiny hopper")
    write_minari(
        root / "hopper",
        "medium-v0",
        episodes,
        "Hopper-v5",
        algorithm="uniform random",
        description="grid smoke test",
        ref_min_score=-20.0,
        ref_max_score=3000.0,
    )
    return root


def check_record(rec: dict[str, Any], algo: str, steps: int) -> None:
    assert set(rec) >= FIELDS, FIELDS - set(rec)
    assert (rec["algo"], rec["env"], rec["dataset"], rec["seed"], rec["steps"]) == (
        algo,
        "hopper",
        "medium",
        0,
        steps,
    )
    assert rec["eval_seeds"] == [10_000, 10_001] and rec["quick"] is True and rec["wall_s"] >= 0
    assert rec["curve"][-1]["step"] == rec["steps"]
    assert len(rec["curve"]) == 2 and rec["final_return"] == rec["curve"][-1]["return"]
    assert rec["last3_return"] == pytest.approx(np.mean([p["return"] for p in rec["curve"]]))
    assert rec["normalized_own"] == pytest.approx(100 * (rec["final_return"] + 20) / 3020)
    assert rec["normalized_d4rl_style"] is not None and np.isfinite(rec["final_return"])


@pytest.mark.parametrize("action_noise", [1.0, 0.5])
def test_quick_qipo_run_writes_bc_and_qipo_records_and_resumes(
    tiny_hopper: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], action_noise: float
) -> None:
    from training.qipo import QIPOTrainer

    argv = ["run", "--quick", "--data", str(tiny_hopper), "--envs", "hopper", "--datasets", "medium"]
    argv += ["--algos", "qipo-ot", "--seeds", "0", "--out", str(tmp_path / "runs")]
    small = {"support_size": 4, "critic_support": 4, "network": {"hidden": 32}, "action_noise": action_noise}
    argv += ["--set", json.dumps(small)]
    assert grid_cli.main(argv) == 0
    records = {r["algo"]: r for r in load_records(tmp_path / "runs")}
    has_bon = "selection" in inspect.signature(QIPOTrainer.policy).parameters
    scaled = action_noise != 1  # the grid then also evaluates the same policies at full noise
    expected = {"bc", "qipo-ot"} | ({"qipo-ot-bon"} if has_bon else set())
    assert set(records) == expected | ({"bc-noise1", "qipo-ot-noise1"} if scaled else set())
    for algo in ("bc", "qipo-ot"):
        assert records[algo]["action_noise"] == action_noise
        if scaled:
            full = records[f"{algo}-noise1"]
            assert full["action_noise"] == 1.0 and full["steps"] == records[algo]["steps"]
            assert [p["step"] for p in full["curve"]] == [p["step"] for p in records[algo]["curve"]]
    qipo = records["qipo-ot"]
    k = qipo["schedule"]
    assert k["k1"] + k["k2"] + k["k3"] == 60 and qipo["config"]["support_size"] == 4
    check_record(qipo, "qipo-ot", 60)
    check_record(records["bc"], "bc", k["k1"])
    assert records["bc"]["curve"][-1]["step"] == k["k1"]
    assert all(p["step"] > k["k1"] + k["k2"] for p in qipo["curve"])  # improvement-phase checkpoints
    capsys.readouterr()
    assert grid_cli.main(argv) == 0  # everything done: nothing trains, nothing is rewritten
    assert "skip qipo-ot hopper/medium seed 0" in capsys.readouterr().out
    assert grid_cli.main(["summarise", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "rl.md").read_text()
    assert "| hopper / medium |" in md and "Smoke-test budgets" in md


def test_quick_peer_runs_use_the_same_budget_and_evaluation(tiny_hopper: Path, tmp_path: Path) -> None:
    pytest.importorskip("d3rlpy", reason="the peers need d3rlpy 2.8.1: `make .venv/.d3rlpy`")
    specs = [RunSpec(algo, "hopper", "medium", 0) for algo in ("iql", "td3bc")]
    run_grid(specs, tiny_hopper, tmp_path, GridSettings.smoke(steps=20), lambda line: None)
    iql, td3bc = (
        json.loads(record_path(tmp_path, a, "hopper", "medium", 0).read_text()) for a in ("iql", "td3bc")
    )
    for rec in (iql, td3bc):
        check_record(rec, rec["algo"], 20)
        assert rec["config"]["d3rlpy"] == "2.8.1"
        assert rec["config"]["observation_scaler"]["type"] == "standard"
        assert [p["step"] for p in rec["curve"]] == [10, 20]
    assert (iql["config"]["expectile"], iql["config"]["weight_temp"]) == (0.7, 3.0)
    assert iql["config"]["reward_scaler"]["params"]["multiplier"] == 1000.0
    assert iql["config"]["actor_optim_factory"]["params"]["lr_scheduler_factory"]["params"]["T_max"] == 20
    assert td3bc["config"]["alpha"] == 2.5 and td3bc["config"]["class"] == "TD3PlusBCConfig"


def test_grid_mean_standard_error_uses_the_sample_variance_of_each_cell() -> None:
    records = [
        synthetic_record("qipo-ot", "hopper", "medium", 0, 60.0, 50.0),
        synthetic_record("qipo-ot", "hopper", "medium", 1, 70.0, 50.0),
        synthetic_record("qipo-ot", "hopper", "medium-expert", 0, 90.0, 50.0),
        synthetic_record("qipo-ot", "hopper", "medium-expert", 1, 100.0, 50.0),
        synthetic_record("iql", "hopper", "medium", 0, 66.0, 50.0),  # one seed: no error bar
    ]
    s = summarise(records)
    # each cell: sample variance 50 over 2 seeds -> 25 per cell mean; two cells -> sqrt(50) / 2
    assert s["per_algo"]["qipo-ot"]["normalized_d4rl_style_se"] == pytest.approx(np.sqrt(50) / 2)
    assert s["per_algo"]["qipo-ot"]["normalized_own_se"] == 0.0
    assert s["per_algo"]["iql"]["normalized_d4rl_style_se"] is None
    assert "| standard error of that mean, over seeds | ± 3.5 | – |" in markdown(s, "cmd")


def test_bootstrap_gap_resamples_seeds_within_cells() -> None:
    from training.bench.summary import bootstrap_gap, bootstrap_table

    def runs(algo: str, scores: list[float], dataset: str = "medium") -> list[dict[str, Any]]:
        return [synthetic_record(algo, "hopper", dataset, s, x, None) for s, x in enumerate(scores)]

    clear = runs("iql", [60.0, 60.0]) + runs("qipo-ot", [50.0, 50.0])
    assert bootstrap_gap(clear, "iql") == {
        "base": "qipo-ot",
        "score": "normalized_d4rl_style",
        "cells": 1,
        "resamples": 4000,
        "gap": 10.0,
        "p_above": 1.0,
        "gap_90": [10.0, 10.0],
    }
    # overlapping seeds: the lead is uncertain, and the interval straddles zero
    noisy = runs("iql", [40.0, 70.0, 55.0]) + runs("qipo-ot", [50.0, 52.0, 54.0])
    b = bootstrap_gap(noisy, "iql")
    assert b is not None and 0.3 < b["p_above"] < 0.9 and b["gap_90"][0] < 0 < b["gap_90"][1]
    assert bootstrap_gap(noisy, "iql") == b  # seeded: the table does not move between summaries
    # only datasets both have count, and only with two seeds each: one seed says nothing about seed noise
    assert bootstrap_gap(clear + runs("iql", [1.0, 2.0], "medium-expert"), "iql")["cells"] == 1  # type: ignore[index]
    one_seed = clear + runs("iql", [1.0], "medium-replay") + runs("qipo-ot", [2.0], "medium-replay")
    assert bootstrap_gap(one_seed, "iql")["gap"] == 10.0  # type: ignore[index]
    assert bootstrap_gap(runs("iql", [1.0]) + runs("qipo-ot", [2.0]), "iql") is None
    table = "\n".join(bootstrap_table(summarise(clear)))
    assert "| IQL (d3rlpy) | D4RL-style | 1 | +10.0 | 100% | +10.0 to +10.0 |" in table


def test_a_task_without_d4rl_references_is_compared_on_the_own_score() -> None:
    """Reacher and Pendulum have no D4RL returns: the suite-wide bootstrap and the paired gains use the
    own score there instead of dropping (or crashing on) them."""
    from training.bench.summary import bootstrap_table, paired_table

    def reacher(algo: str, seed: int, own: float) -> dict[str, Any]:
        return synthetic_record(algo, "reacher", "mixed", seed, 0.0, own) | {
            "normalized_d4rl_style": None,
            "final_return": -5.0 - own / 100,
            "last3_return": -5.0 - own / 100,
        }

    records = [reacher("qipo-ot", s, 95.0 + s) for s in (0, 1)] + [reacher("td3bc", s, 99.0) for s in (0, 1)]
    records += [reacher("bc", s, 90.0) for s in (0, 1)]
    s = summarise(records)
    assert s["bootstrap"]["normalized_d4rl_style"] == {}
    own = s["bootstrap"]["normalized_own"]["td3bc"]
    assert own["cells"] == 1 and own["gap"] == pytest.approx(3.5) and own["p_above"] == 1.0
    assert "| TD3+BC (d3rlpy) | own | 1 | +3.5 | 100% |" in "\n".join(bootstrap_table(s))
    (row,) = s["comparisons"][0]["rows"]
    assert row["gain_d4rl_style"] is None and row["gain_own"] == [5.0, 6.0]
    md = "\n".join(paired_table("qipo-ot", "bc", [row]))
    assert "| reacher / mixed | -5.95 vs -5.90 · -5.96 vs -5.90 | – | +5.5 | 0/2 | 0/2 |" in md
