"""The local stack end to end: `scripts/stack.sh up` (two replicas behind Debian's nginx, Prometheus if
installed), locust robots at 50 Hz through nginx while `production` is promoted to a new version and rolled
back (loadtests/upgrade.py). Zero failed requests, and each replica's own /metrics (Prometheus format)
shows the version change: model_info 1 → 2 → 1 and three successful swaps."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import free_port
from tests.service.registry_fixtures import MODEL, REDIS_URL, artifacts, redis_registry  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DURATION_S = 20
ROBOTS = 5

pytestmark = pytest.mark.slow


def scrape(url: str) -> tuple[frozenset[str], float]:
    """The versions with qipo_model_info == 1 and the count of successful swaps, from one /metrics page."""
    text = httpx.get(url, timeout=2).text
    versions: set[str] = set()
    swaps_ok = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "qipo_model_info" and sample.value == 1:
                versions.add(sample.labels["version"])
            if sample.name == "qipo_model_swaps_total" and sample.labels.get("result") == "ok":
                swaps_ok = sample.value
    return frozenset(versions), swaps_ok


class MetricsPoller(threading.Thread):
    """Scrapes every replica's /metrics every 200 ms, as Prometheus would (but faster)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.samples: dict[str, list[tuple[frozenset[str], float]]] = {u: [] for u in urls}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for url in self.urls:
                try:
                    self.samples[url].append(scrape(url))
                except (httpx.HTTPError, OSError) as exc:
                    self.errors.append(f"{url}: {exc}")
            self.halt.wait(0.2)


def prometheus_versions(prom: str, start: float, end: float) -> dict[str, set[str]]:
    """instance → versions seen in Prometheus' own scrapes of qipo_model_info over the run."""
    query = urllib.parse.urlencode(
        {"query": "max by (instance, version) (qipo_model_info)", "start": start, "end": end, "step": 1}
    )
    data = json.loads(urllib.request.urlopen(f"{prom}/api/v1/query_range?{query}", timeout=5).read())
    seen: dict[str, set[str]] = {}
    for series in data["data"]["result"]:
        if any(float(v) == 1 for _, v in series["values"]):
            seen.setdefault(series["metric"]["instance"], set()).add(series["metric"]["version"])
    return seen


def test_locust_robots_through_nginx_see_promote_and_rollback(
    artifacts: list[Path],  # noqa: F811
    redis_registry: RedisRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed; run `make stack-deps` (apt-get install -y nginx)")
    v1 = redis_registry.publish(artifacts[0]).version
    redis_registry.promote(MODEL, "production", v1)
    v2 = redis_registry.publish(artifacts[1]).version
    lb, api_ports, prom_port = free_port(), [free_port(), free_port()], free_port()
    env = os.environ | {
        "STACK_DIR": str(tmp_path / "stack"),
        "STACK_LB_PORT": str(lb),
        "STACK_API_PORTS": " ".join(map(str, api_ports)),
        "STACK_PROM_PORT": str(prom_port),
        "STACK_REGISTRY": REDIS_URL,
        "STACK_PREFIX": redis_registry.prefix,
        "STACK_BIN": str(BIN),
        "QIPO_MODEL_NAME": MODEL,
        "QIPO_DRAIN_SECONDS": "1",  # a replaced version leaves model_info within a second of going idle
    }
    stack = ["bash", str(ROOT / "scripts/stack.sh")]
    subprocess.run([*stack, "up"], env=env, cwd=ROOT, check=True, timeout=180)
    poller = MetricsPoller([f"http://127.0.0.1:{p}/metrics" for p in api_ports])
    summary_path = tmp_path / "summary.json"
    try:
        poller.start()
        started = time.time()
        run = subprocess.run(
            [str(BIN / "locust"), "-f", "loadtests/upgrade.py", "--headless", "--only-summary",
             "-H", f"http://127.0.0.1:{lb}", "--stop-timeout", "5"],
            env=env | {
                "QIPO_REGISTRY": REDIS_URL,
                "QIPO_REGISTRY_PREFIX": redis_registry.prefix,
                "QIPO_DURATION": str(DURATION_S),
                "QIPO_ROBOTS": str(ROBOTS),
                "QIPO_UPGRADE_TO": str(v2),
                "QIPO_LOCUST_SUMMARY": str(summary_path),
            },
            cwd=ROOT, capture_output=True, text=True, timeout=DURATION_S + 90,
        )  # fmt: skip
        time.sleep(2.5)  # drain_seconds + a scrape: the rolled-back-from version leaves model_info
        poller.halt.set()
        poller.join(5)
        prom_seen = (
            prometheus_versions(f"http://127.0.0.1:{prom_port}", started, time.time())
            if (tmp_path / "stack/pids/prometheus.pid").exists()
            else None
        )
    finally:
        poller.halt.set()
        subprocess.run([*stack, "down"], env=env, cwd=ROOT, timeout=60)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == 0
    assert summary["requests"] >= ROBOTS * DURATION_S * 10, summary  # ≥ 20% of 50 Hz on a busy 2-core box
    assert [(e["event"], e["from_version"], e["to_version"]) for e in summary["upgrade_log"]] == [
        ("promote", v1, v2),
        ("rollback", v2, v1),
    ]
    assert set(summary["versions_served"]) == {str(v1), str(v2)}
    for url, samples in poller.samples.items():
        served = [s for s, _ in samples]
        assert served[0] == {str(v1)}, (url, served[:5])
        assert {str(v2)} in served, f"{url} never showed only version {v2}: {sorted(set(served))}"
        assert served[-1] == {str(v1)}, (url, served[-5:])
        assert samples[-1][1] - samples[0][1] == 2, f"{url}: expected 2 swaps during the run, {samples}"
        flips = [a for a, b in itertools.pairwise(served) if a != b]
        assert len(flips) <= 4, f"{url}: version flapped: {flips}"
    if prom_seen is not None:
        assert len(prom_seen) == 2 and all(v >= {str(v1), str(v2)} for v in prom_seen.values()), prom_seen
