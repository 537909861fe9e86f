"""The improvement-phase probe's arguments and record names (training/bench/probe.py; no training here)."""

from __future__ import annotations

from pathlib import Path

from training.bench import probe


def test_arguments_and_defaults() -> None:
    args = probe.parse_args(["--data", "data/hopper/medium-v0", "--base", "b", "--name", "uniform"])
    assert (args.evals, args.episodes, args.noise_scales, args.set) == ("0,1000,2000,4000", 10, "1", "{}")
    assert args.out == Path("docs/bench/rl-probes")


def test_record_is_named_env_dataset_variant() -> None:
    record = probe.record_path(Path("out"), Path("data/hopper/medium-v0"), "uniform")
    assert record == Path("out/hopper__medium-v0__uniform.json")


def test_eval_points_noise_scales_and_keys() -> None:
    assert probe.eval_points("4000,0,1000") == [0, 1000, 4000]
    assert probe.noise_scales("1,0.5,0") == [1.0, 0.5, 0.0]
    assert [probe.sample_key(s) for s in (1.0, 0.5, 0.0)] == ["sample", "sample@0.5", "sample@0"]
