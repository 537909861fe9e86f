"""The toy benchmark's pieces (resampler, distances, datasets) and a CI-sized run of the claim itself:
EFM trained at β = 3 on 8gaussians lands far closer to the exact tilted law than unguided p does."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from training.toy.bench import BenchConfig, bench_config, checks, markdown
from training.toy.datasets import DATASETS, get_dataset
from training.toy.exact import effective_sample_size, sample_tilted, tilt_weights
from training.toy.metrics import kernel_mean, mmd, sliced_wasserstein
from training.toy.models import ToyTrainConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_tilt_weights_are_normalised_softmax_of_minus_beta_energy() -> None:
    energy = np.array([0.0, -1.0, 2.0, 700.0, -700.0])  # extremes must not overflow
    w = tilt_weights(energy, beta=1.0)
    assert np.isclose(w.sum(), 1.0) and np.all(w >= 0)
    assert w.argmax() == 4 and w[3] == 0.0
    small = tilt_weights(energy[:3], beta=2.0)
    expected = np.exp(-2.0 * energy[:3]) / np.exp(-2.0 * energy[:3]).sum()
    np.testing.assert_allclose(small, expected, rtol=1e-12)


def test_effective_sample_size_bounds() -> None:
    assert effective_sample_size(np.full(100, 0.01)) == pytest.approx(100.0)
    assert effective_sample_size(np.eye(1, 100)[0]) == pytest.approx(1.0)


def test_resampler_matches_the_tilted_mode_probabilities() -> None:
    """8gaussians: q(mode k) ∝ exp(β·k/7), known in closed form; mode of a draw = nearest centre."""
    beta, n = 3.0, 40_000
    x, report = sample_tilted(get_dataset("8gaussians"), beta, n, np.random.default_rng(1), pool=400_000)
    assert report.ess >= 20 * n and report.pool >= 400_000 and report.unique_fraction > 0.9
    angle = np.arctan2(x[:, 1], x[:, 0])
    mode = np.round((angle - np.pi / 2) / (np.pi / 4)).astype(int) % 8
    freq = np.bincount(mode, minlength=8) / n
    expected = np.exp(beta * np.arange(8) / 7)
    expected /= expected.sum()
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_resampler_grows_the_pool_until_ess_is_enough() -> None:
    _, report = sample_tilted(get_dataset("swissroll"), 10.0, 1000, np.random.default_rng(0), pool=100_000)
    assert report.pool > 100_000 and report.ess >= 20 * 1000


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datasets_are_finite_seeded_and_energies_bounded(name: str) -> None:
    ds = get_dataset(name)
    x, e = ds.sample(5000, np.random.default_rng(3))
    x2, _ = ds.sample(5000, np.random.default_rng(3))
    assert x.shape == (5000, 2) and e.shape == (5000,)
    np.testing.assert_array_equal(x, x2)
    assert np.isfinite(x).all() and np.abs(x).max() < 2 * ds.extent
    assert e.max() <= 0.0 and e.min() >= -2.5 and e.std() > 0  # E = −value, value ∈ [0, ~2]


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="8gaussians"):
        get_dataset("spiral")


def test_distances_of_a_sample_to_itself_are_zero_and_a_shift_is_seen() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 2))
    y = rng.standard_normal((3000, 2))
    assert sliced_wasserstein(x, x) == 0.0 and mmd(x, x) == pytest.approx(0.0, abs=1e-4)
    floor_swd, floor_mmd = sliced_wasserstein(x, y), mmd(x, y)
    shifted = y + np.array([0.5, 0.0])
    assert sliced_wasserstein(x, shifted) > 5 * floor_swd
    assert mmd(x, shifted) > 3 * floor_mmd
    # SW1 of a pure translation is the mean |projection of the shift| = 0.5·E|cos θ| = 1/π
    assert sliced_wasserstein(x, x + np.array([0.5, 0.0]), projections=1024) == pytest.approx(
        1 / np.pi, rel=0.05
    )
    assert mmd(x, y, yy=kernel_mean(y)) == pytest.approx(floor_mmd)
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(x, y[:10])


def test_quick_bench_efm_is_far_closer_to_q_than_p(tmp_path: Path) -> None:
    """The CI-sized claim: 8gaussians, β = 3, --quick: EFM's SWD to q ≤ ⅓ of unguided p's, via the CLI."""
    from training.toy.cli import toy_app

    res = CliRunner().invoke(
        toy_app, ["bench", "--out", str(tmp_path), "--quick", "--datasets", "8gaussians", "--betas", "3"]
    )
    assert res.exit_code == 0, res.output
    records = json.loads((tmp_path / "toy.json").read_text())
    assert {r["method"] for r in records} == {"efm", "ed", "cfm", "cfg"}
    assert all(
        set(r)
        == {"dataset", "beta", "method", "swd", "mmd", "swd_floor", "mmd_floor", "swd_exact", "mmd_exact"}
        for r in records
    )
    by = {r["method"]: r for r in records}
    assert by["efm"]["swd"] <= by["cfm"]["swd"] / 3, by
    assert by["efm"]["mmd"] < by["cfm"]["mmd"]
    assert by["cfm"]["swd"] > 3 * by["cfm"]["swd_floor"]  # p really is far from q: the test can fail
    assert "| 8gaussians | 3 |" in (tmp_path / "toy.md").read_text()
    assert (tmp_path / "toy.png").stat().st_size > 10_000
    meta = json.loads((tmp_path / "toy.meta.json").read_text())
    assert meta["exact_sampler"]["per_dataset_beta"]["8gaussians@3"]["ess"] >= 20 * 2 * 2000


def test_cli_rejects_unknown_dataset_with_one_line(tmp_path: Path) -> None:
    from training.toy.cli import toy_app

    res = CliRunner().invoke(toy_app, ["bench", "--out", str(tmp_path), "--quick", "--datasets", "nope"])
    assert res.exit_code == 1 and "unknown toy dataset 'nope'; choose from 8gaussians" in res.output
    res = CliRunner().invoke(toy_app, ["bench", "--out", str(tmp_path), "--betas", "1,x"])
    assert res.exit_code == 1 and "--betas takes comma-separated numbers" in res.output
    res = CliRunner().invoke(toy_app, ["bench", "--out", str(tmp_path), "--size", "huge"])
    assert res.exit_code == 1 and "--size takes one of small, large, got 'huge'" in res.output
    res = CliRunner().invoke(toy_app, ["bench", "--out", str(tmp_path), "--quick", "--size", "large"])
    assert res.exit_code == 1 and "--quick sets its own CI size" in res.output
    assert not (tmp_path / "toy.json").exists()


def test_named_sizes_set_the_budget_and_explicit_flags_win() -> None:

    assert bench_config().train == ToyTrainConfig()
    large = bench_config("large", train={"steps": 20, "device": "cpu"}, datasets=("moons",))
    assert large.train == ToyTrainConfig(steps=20, hidden=256, blocks=2, ot_steps=100)
    assert large.datasets == ("moons",)
    assert bench_config("large").train.steps == 8000
    assert bench_config(quick=True, train={"steps": 7}).train.steps == 7
    assert bench_config(quick=True).n_eval == 2000


def test_checks_and_markdown_report_failures_honestly() -> None:
    rec = [
        {"dataset": "d", "beta": 10.0, "method": m, "swd": s, "mmd": s, "swd_floor": 0.1, "mmd_floor": 0.1}
        for m, s in (("efm", 0.5), ("ed", 0.2), ("cfm", 1.0), ("cfg", 0.3))
    ]
    result = checks(rec)
    assert result["efm_within_2x_floor:fail"] == ["d β=10"]
    assert result["efm_beats_p:pass"] == ["d β=10"]
    assert result["efm_beats_cfg_at_max_beta:fail"] == ["d β=10"]
    meta = {
        "config": BenchConfig.quick().as_dict(),
        "metrics": {"swd": "s", "mmd": "m"},
        "cpu_seconds": 1.0,
        "wall_seconds": 1.0,
        "torch_threads": 1,
        "torch": "x",
        "created_at": "now",
    }
    md = markdown(rec, meta)
    assert "EFM within 2× of the one-draw floor: 0/1; not on: d β=10" in md
    assert "0.500 (5.0×)" in md


def test_bench_config_rejects_bad_betas() -> None:
    with pytest.raises(ValueError, match="positive"):
        BenchConfig(betas=(0.0,))
    with pytest.raises(ValueError, match="include efm"):
        BenchConfig(methods=("cfm",))
    with pytest.raises(ValueError, match="come from"):
        BenchConfig(methods=("efm", "gan"))


def test_efm_only_run_trains_one_net_per_beta_and_reports_only_its_claim(tmp_path: Path) -> None:
    """`--methods efm` (a capacity probe) writes EFM rows alone; the table and checks follow."""
    from training.toy.cli import toy_app

    args = ["bench", "--out", str(tmp_path), "--quick", "--datasets", "moons", "--betas", "1"]
    res = CliRunner().invoke(toy_app, [*args, "--methods", "efm", "--steps", "50", "--ot-steps", "5"])
    assert res.exit_code == 0, res.output
    records = json.loads((tmp_path / "toy.json").read_text())
    assert [r["method"] for r in records] == ["efm"]
    md = (tmp_path / "toy.md").read_text()
    assert "| dataset | β | floor | exact | EFM |\n" in md and "EFM within 2× of an exact sample" in md
    assert "unguided p" not in md and "5 Euler steps" in md
    assert "efm_within_2x_floor: " in res.output and "efm_beats_p" not in res.output


def test_a_dataset_subset_reproduces_the_full_runs_rows() -> None:
    """Seeds follow the dataset's place in the full list, so `--datasets X` rows equal the full bench's."""
    from training.toy.bench import run_bench

    small = ToyTrainConfig(steps=20, batch_size=128, ot_steps=4)
    base = {"betas": (3.0,), "methods": ("efm",), "n_eval": 300, "train_size": 5000, "projections": 32}
    both = run_bench(BenchConfig(datasets=("8gaussians", "moons"), train=small, **base), progress=False)
    alone = run_bench(BenchConfig(datasets=("moons",), train=small, **base), progress=False)
    assert [r for r in both.records if r["dataset"] == "moons"] == alone.records


def test_a_stopped_run_resumes_at_its_next_model_with_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints: a run stopped after some models resumes without retraining them, and its records and
    figure equal an uninterrupted run's; other settings never reuse them; a finished run leaves none."""
    import training.toy.bench as bench

    small = ToyTrainConfig(steps=20, batch_size=128, ot_steps=4, vp_steps=3)
    config = BenchConfig(
        datasets=("moons",),
        betas=(1.0, 3.0),
        n_eval=300,
        train_size=5000,
        projections=32,
        exact_draws=2,
        train=small,
    )
    whole = bench.run_bench(config, progress=False)
    real, trained, stop_at = bench.train_toy_model, [], [3]

    def record_beta(*args: Any, **kwargs: Any) -> Any:
        if len(trained) in stop_at:
            raise KeyboardInterrupt  # the session ends before the fourth model
        trained.append(args[3])  # (data, energy, path, beta, ...)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "train_toy_model", record_beta)
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(config, progress=False, checkpoints=tmp_path)
    assert sorted(p.name for p in (tmp_path / "moons").glob("*.json")) == [
        "cfg.json",
        "ed@1.json",
        "efm@1.json",
    ]

    old = tmp_path / "moons" / "efm@1.json"  # as written before units carried their time
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "cpu_seconds"}))

    trained.clear()
    stop_at.clear()
    resumed = bench.run_bench(config, progress=False, checkpoints=tmp_path)
    assert trained == [3.0, 3.0]  # only β = 3's EFM and ED nets were left
    assert resumed.records == whole.records
    meta = resumed.meta  # the two timed units' CPU is counted, the untimed one is named
    assert (meta["resumed_models"], meta["untimed_models"]) == (3, 1)
    assert 0 < meta["resumed_cpu_seconds"] <= meta["cpu_seconds"]
    assert "3 model(s) resumed from checkpoints" in bench.markdown(resumed.records, meta)
    assert whole.meta["resumed_models"] == 0
    for col, points in whole.figure_samples["moons"].items():
        assert np.allclose(resumed.figure_samples["moons"][col], points, atol=2e-2)  # float16 when resumed
    assert not tmp_path.exists()  # a finished run clears its checkpoints

    (tmp_path / "moons").mkdir(parents=True)  # checkpoints of other settings are recomputed, not reused
    bench.Checkpoints(tmp_path, replace(config, seed=1).as_dict()).save(
        "moons", "cfg", bench.Unit([{"swd": -1.0}], {}, 1.0)
    )
    trained.clear()
    assert bench.run_bench(config, progress=False, checkpoints=tmp_path).records == whole.records
    assert len(trained) == 5


def test_merged_shards_equal_one_run_and_refuse_unlike_settings(tmp_path: Path) -> None:
    """Two cores each run one dataset; `qipo toy merge` gives the full run's rows, table and figure."""
    from training.toy.bench import run_bench, write_outputs
    from training.toy.cli import toy_app

    small = ToyTrainConfig(steps=20, batch_size=128, ot_steps=4)
    base = {"betas": (3.0,), "methods": ("efm",), "n_eval": 300, "train_size": 5000, "projections": 32}
    both = run_bench(BenchConfig(datasets=("8gaussians", "moons"), train=small, **base), progress=False)
    for name in ("moons", "8gaussians"):  # shards given out of the list's order
        shard = run_bench(BenchConfig(datasets=(name,), train=small, **base), progress=False)
        write_outputs(shard, tmp_path / name)
    res = CliRunner().invoke(
        toy_app,
        ["merge", str(tmp_path / "moons"), str(tmp_path / "8gaussians"), "--out", str(tmp_path / "all")],
    )
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "all" / "toy.json").read_text())
    rounded = [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in both.records]
    assert merged == rounded
    meta = json.loads((tmp_path / "all" / "toy.meta.json").read_text())
    assert meta["config"]["datasets"] == ["8gaussians", "moons"]
    assert set(meta["exact_sampler"]["per_dataset_beta"]) == {"8gaussians@3", "moons@3"}
    md = (tmp_path / "all" / "toy.md").read_text()
    assert "| 8gaussians | 3 |" in md and "| moons | 3 |" in md and "Merged from 2 runs" in md
    assert "Not yet run at this size: swissroll, rings, checkerboard, 2spirals." in md
    assert (tmp_path / "all" / "toy.png").stat().st_size > 10_000
    assert not (tmp_path / "all" / "toy.samples.npz").exists()  # the shards keep the points

    again = CliRunner().invoke(
        toy_app, ["merge", str(tmp_path / "moons"), str(tmp_path / "moons"), "--out", str(tmp_path / "x")]
    )
    assert again.exit_code == 1 and "repeats dataset(s) moons" in again.output
    other = run_bench(
        BenchConfig(datasets=("rings",), train=replace(small, hidden=16), **base), progress=False
    )
    write_outputs(other, tmp_path / "rings")
    unlike = CliRunner().invoke(
        toy_app, ["merge", str(tmp_path / "moons"), str(tmp_path / "rings"), "--out", str(tmp_path / "x")]
    )
    assert unlike.exit_code == 1 and "other settings" in unlike.output and "(train)" in unlike.output
    assert not (tmp_path / "x").exists()


def test_exact_draw_baseline_is_replayed_for_old_runs_and_refuses_another_reference(tmp_path: Path) -> None:
    """`qipo toy exact` gives an earlier run the baseline a new run computes, from the seeds alone."""
    from training.toy.bench import run_bench, write_outputs
    from training.toy.cli import toy_app

    small = ToyTrainConfig(steps=20, batch_size=128, ot_steps=4)
    config = BenchConfig(
        datasets=("moons",),
        betas=(1.0, 3.0),
        methods=("efm",),
        n_eval=300,
        train_size=5000,
        projections=32,
        exact_draws=3,
        train=small,
    )
    result = run_bench(config, progress=False)
    write_outputs(result, tmp_path)
    new = json.loads((tmp_path / "toy.json").read_text())
    assert all(0 < r["swd_exact"] < 10 * r["swd_floor"] and r["mmd_exact"] > 0 for r in new)
    # the same records as a run from before the baseline existed
    old = [{k: v for k, v in r.items() if not k.endswith("_exact")} for r in new]
    (tmp_path / "toy.json").write_text(json.dumps(old))
    assert checks(old)["efm_within_2x_exact:pass"] == checks(old)["efm_within_2x_exact:fail"] == []
    res = CliRunner().invoke(toy_app, ["exact", str(tmp_path), "--draws", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "toy.json").read_text()) == new
    assert "| dataset | β | floor | exact | EFM |" in (tmp_path / "toy.md").read_text()

    other = [r | {"swd_floor": r["swd_floor"] + 0.01} for r in old]
    (tmp_path / "toy.json").write_text(json.dumps(other))
    res = CliRunner().invoke(toy_app, ["exact", str(tmp_path), "--draws", "3"])
    assert res.exit_code == 1 and "cannot replay the reference of moons β=1" in res.output
    assert json.loads((tmp_path / "toy.json").read_text()) == other  # nothing rewritten
