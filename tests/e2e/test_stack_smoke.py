"""The locust robots' headless smoke run (the fast guard against a rotting locustfile): 3 robots at 50 Hz for
3 s against one real replica; every request answered, the summary carries p50/p99 and the version served.

Robust to a loaded box without going blind: the deadline is one second (a 20 ms one turns requests into 504s
under load, which locust counts but the version tally does not), the version tally is checked exactly
against locust's count minus the 504s and the three GET /v1/models, and the floor on requests is what a
starved box still reaches (5 per robot, 3% of the nominal 450) while a broken pacing or task stays far below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import replicas
from tests.service.registry_fixtures import MODEL, REDIS_URL, artifacts, redis_registry  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def test_locust_steady_smoke(
    artifacts: list[Path],  # noqa: F811
    redis_registry: RedisRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    version = redis_registry.publish(artifacts[0]).version
    redis_registry.promote(MODEL, "production", version)
    summary_path = tmp_path / "summary.json"
    with replicas(1, REDIS_URL, redis_registry.prefix, tmp_path) as (replica,):
        run = subprocess.run(
            [str(Path(sys.executable).parent / "locust"), "-f", "loadtests/steady.py", "--headless",
             "--only-summary", "-H", replica.url, "--stop-timeout", "2"],
            env={"PATH": str(Path(sys.executable).parent), "QIPO_DURATION": "3", "QIPO_ROBOTS": "3",
                 "QIPO_ROBOT_DEADLINE_MS": "1000", "QIPO_LOCUST_SUMMARY": str(summary_path)},
            cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == 0
    acts = summary["requests"] - 3  # minus the robots' GET /v1/models
    assert acts >= 3 * 5, summary
    assert summary["versions_served"] == {str(version): acts - summary["deadline_misses_504"]}, summary
    assert 0 <= summary["p50_ms"] <= summary["p99_ms"]
    assert "qipo-robots summary" in run.stdout + run.stderr
