"""The GPU check's arithmetic and report (loadtests/gpu_check.py; the measurement needs a CUDA machine)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtests import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_report_regenerates() -> None:
    source = ROOT / "docs" / "bench" / "gpu-check-graphs.json"
    assert gpu_check.markdown(json.loads(source.read_text())) == source.with_suffix(".md").read_text()


def test_markdown_without_the_optional_parts_and_a_failed_train() -> None:
    result = json.loads((ROOT / "docs" / "bench" / "gpu-check-graphs.json").read_text())
    del result["sampler"], result["act"], result["parity"]["graph_max_abs_diff"]
    result["train"] = {"ok": False, "returncode": 3, "stderr_tail": "CUDA out of memory"}
    md = gpu_check.markdown(result)
    assert "## Sampler" not in md and "/act" not in md and "CUDA graphs (1–256" not in md
    assert "Failed (exit 3): `CUDA out of memory`" in md


def test_phase_rates_take_each_phase_from_the_last_row_of_the_one_before() -> None:
    rows = [
        {"phase": "behavior", "step": 50, "elapsed_s": 1.0},
        {"phase": "behavior", "step": 100, "elapsed_s": 2.0},
        {"phase": "critic", "step": 300, "elapsed_s": 6.0},
        {"phase": "critic", "step": 310},  # no elapsed_s: not a timing row
        {"phase": "improve", "step": 300, "elapsed_s": 6.0},
    ]
    rates = gpu_check.phase_rates(rows)
    assert rates["behavior"] == 50.0 and rates["critic"] == 50.0 and math.isnan(rates["improve"])
    assert gpu_check.phase_rates([]) == {}
    budget = gpu_check.budget_seconds({"behavior": 100.0, "critic": 300.0})
    assert budget == pytest.approx(10_000 / 100 + 30_000 / 300)


def test_servers_argument_round_trips() -> None:
    default = gpu_check.parse_args(["--out", "x"]).servers
    assert gpu_check.parse_servers(default) == gpu_check.SERVERS
    assert gpu_check.parse_servers("cuda:thread:1,") == (("cuda", "thread", True),)


def test_wall_per_call_warms_up_and_takes_enough_samples() -> None:
    calls: list[int] = []
    sec = gpu_check.wall_per_call(lambda: calls.append(1), seconds=0.0, least=4)
    assert len(calls) == 3 + 4 and sec >= 0
