"""The training-throughput bench's arithmetic and report (the timing itself is `make bench-train`)."""

from __future__ import annotations

import pytest

from training.bench.throughput import markdown, renewals, schedule_rate
from training.config import QIPOConfig


def test_schedule_rate_weights_each_phase_by_its_steps_and_adds_renewals() -> None:
    cfg = QIPOConfig(behavior_steps=100, critic_steps=300, improve_steps=40, renew_every=10)
    rates = {"behavior": 100.0, "critic-iql": 50.0, "improve-full": 10.0}
    # 1 s + 6 s + 4 s of steps, plus 4 renewals of 0.5 s: 440 steps in 13 s
    assert renewals(cfg) == 4
    assert schedule_rate(cfg, rates, 0.5) == pytest.approx(440 / 13)


def test_markdown_reports_ratios_and_every_phase() -> None:
    phases = ("behavior", "critic-iql", "improve-full")
    profile = {
        "matmul": 0.6,
        "optimizer": 0.05,
        "other_ops": 0.15,
        "autograd_dispatch": 0.05,
        "python": 0.15,
        "gflop_per_step": 0.8,
    }
    result = {
        "config": QIPOConfig().model_dump(mode="json"),
        "schedule": {"behavior": 10, "critic": 30, "improve": 4, "renewals": 4},
        "dataset_size": 1000,
        "steps_per_block": 5,
        "rounds": 1,
        "machine": "test",
        "load_average_1min": {"start": 0.1, "end": 0.2},
        "reference_commit": "abc",
        "qipo_schedule_steps_per_s": 60.0,
        "reference_schedule_steps_per_s": 50.0,
        "schedule_speedup": 1.2,
        "peer_steps_per_s": {"iql": 40.0},
        "peer_batch_size": {"iql": 256},
        "ratio_to_peer": {"iql": 1.5},
        "phase_steps_per_s": dict.fromkeys(phases, 10.0),
        "reference_phase_steps_per_s": dict.fromkeys(phases, 8.0),
        "phase_speedup": dict.fromkeys(phases, 1.25),
        "profile": dict.fromkeys(phases, profile),
        "arithmetic_floor_steps_per_s": dict.fromkeys(phases, 100.0),
        "share_of_floor": dict.fromkeys(phases, 0.1),
        "gemm_gflops": 80.0,
        "renewal_s": 1.0,
        "reference_renewal_s": 1.5,
    }
    text = markdown(result)
    assert "| d3rlpy iql (batch 256) | 40.0 | 1.5× |" in text
    assert all(f"| {p} | 10.0 | 8.0 | 1.25× |" in text for p in phases)
