"""Offline-RL benchmark grid: QIPO-OT, its own BC warm-up and d3rlpy peers on the same datasets and budget.

`grid` trains and evaluates one (algo, env, dataset, seed) run at a time and writes one JSON record per
result; `peers` wraps d3rlpy's IQL and TD3+BC; `summary` turns a folder of records into rl.{json,md,png}.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (benchmarks state the machine their numbers come from)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
