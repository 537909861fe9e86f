"""The swap benchmark's arithmetic: when each promotion became visible, and the report's phases."""

from __future__ import annotations

import argparse

from loadtests import swap
from tests.e2e.fleet import FleetResult, Observation


def obs(sent: float, version: int, replica: int, status: int = 200) -> Observation:
    return Observation("r", 0, 0, sent, sent + 0.01, status, version, replica)


def test_swap_seconds_wait_for_every_replica() -> None:
    result = FleetResult(
        observations=[obs(1.0, 1, 0), obs(10.2, 2, 0), obs(10.5, 2, 1), obs(20.1, 1, 1)],
        moves=[(10.0, "production", 2), (30.0, "production", 3)],
    )
    seconds = swap.swap_seconds(result)
    assert round(seconds[0], 6) == 0.51  # replica 1 answered with version 2 at 10.51
    assert seconds[1] != seconds[1]  # no replica ever answered with version 3: nan


def test_report_splits_requests_sent_near_a_promotion() -> None:
    observations = [obs(t, 1, 0) for t in (1.0, 2.0, 3.0)] + [obs(10.5, 2, 0), obs(11.5, 2, 0, status=0)]
    result = FleetResult(observations=observations, moves=[(10.0, "production", 2)])
    args = argparse.Namespace(
        robots=2, rate_hz=20.0, steady=10.0, swaps=1, gap=5.0, window=1.0, redis="redis://x", out="."
    )
    report = swap.summarise(result, [{"loads": 2.0, "mean_s": 0.05}], args)
    assert report["steady"]["requests"] == 3 and report["during_swap"]["requests"] == 1
    assert report["failed"] == 1 and report["pass"] is False
    assert "redis" not in report["config"]
    md = swap.markdown(report)
    assert "Two replicas, 2 robots at 20 Hz on loopback, 1 promotions to" in md
    assert "| during swap | 1 | 10.00 | 10.00 |" in md and "FAIL" in md
    assert "2 loads, mean 50 ms" in md
