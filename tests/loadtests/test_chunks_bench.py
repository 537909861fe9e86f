"""The chunk benchmark's executors and summary (loadtests/chunks.py) with a fake policy: the delayed H = 1
arm applies π(s_t) at t + d, ACT's ensemble averages the arrived chunks covering t with exp(−m·i)
weights (oldest first), and the summary's claims read the right rows."""

from __future__ import annotations

import numpy as np
import pytest
from qipo_client.policy import PolicyMetadata

from loadtests.chunks import Delayed, TemporalEnsemble, claims, summarise


class Counting:
    """A chunk's action i for the request made at step k is 10·k + i (H = 1: 10·k)."""

    def __init__(self, horizon: int) -> None:
        self.metadata = PolicyMetadata("fake", 1, 1, (-1e9,), (1e9,), action_horizon=horizon)
        self.k = 0

    def infer(self, states: np.ndarray, noise: object = None) -> np.ndarray:
        k, self.k = self.k, self.k + 1
        h = self.metadata.action_horizon
        chunk = (10.0 * k + np.arange(h, dtype=np.float32)).reshape(1, h, 1)
        return chunk if h > 1 else chunk.reshape(1, 1)

    def reset(self) -> None:
        self.k = 0


def test_delayed_applies_the_action_of_d_steps_ago() -> None:
    act = Delayed(Counting(1), 2, lambda k: None)
    out = [float(act.step(np.zeros(1))[0]) for _ in range(5)]
    assert out == [0.0, 0.0, 0.0, 10.0, 20.0]  # zeros until the first reply, then π(s_{t−2})


def test_ensemble_weights_arrived_chunks_oldest_first() -> None:
    act = TemporalEnsemble(Counting(4), 1, lambda k: None, m=0.5)
    out = [float(act.step(np.zeros(1))[0]) for _ in range(4)]
    assert out[0] == 0.0  # nothing arrived yet
    assert out[1] == pytest.approx(1.0)  # chunk 0 only, its index 1
    w = np.exp(-0.5 * np.arange(2))
    assert out[2] == pytest.approx((2.0 * w[0] + 11.0 * w[1]) / w.sum())  # chunks 0 and 1 cover step 2
    act = TemporalEnsemble(Counting(2), 3, lambda k: None)
    held = [float(act.step(np.zeros(1))[0]) for _ in range(5)]
    assert held[3:] == [1.0, 11.0]  # d ≥ H: the newest arrived chunk's last action holds


def test_summary_and_claims() -> None:
    def row(arm: str, delay: int, ret: float, horizon: int = 4) -> dict[str, object]:
        jerk = {"jerk_boundary": 0.2, "jerk_inside": 0.2, "jerk_all": 0.2, "starved": 0, "waited_steps": 0}
        return {
            "env_id": "E",
            "horizon": horizon,
            "policy": "p",
            "arm": arm,
            "delay": delay,
            "return": ret,
        } | jerk

    rows = [row("sync", 0, 100.0), row("inpaint", 4, 95.0), row("naive", 4, 50.0), row("ensemble", 4, 60.0)]
    rows.append(row("h1-delayed", 0, 101.0, horizon=1))
    (claim,) = claims(summarise(rows), 4)
    assert claim["inpaint_d4_over_d0"] == pytest.approx(0.95) and claim["inpaint_keeps_90pct"]
    assert claim["inpaint_beats_naive"] and claim["inpaint_beats_ensemble"]
    assert claim["inpaint_jerk_ratio"] == pytest.approx(1.0) and claim["chunked_d0_within_5pct_of_h1"]
