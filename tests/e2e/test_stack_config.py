"""The deploy files agree with the code: every metric the dashboard queries exists with that name
(docs/architecture.md), probes and healthchecks hit real routes, and the compose topology keeps its promises
(replicas, AOF, service_healthy ordering, GPU reservation). Syntax and schemas are checked by
`make lint-deploy` (hadolint, compose-spec, kubernetes-validate, nginx -t, promtool)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.app import create_app
from service.metrics import Metrics
from service.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/qipo.json"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""], "summary": [""]}
# What the dashboard must show, by the metric name in docs/architecture.md.
REQUIRED = [
    "qipo_act_requests_total",
    "qipo_act_latency_seconds_bucket",
    "qipo_batch_size_bucket",
    "qipo_actions_clipped_total",
    "qipo_deadline_exceeded_total",
    "qipo_model_info",
]


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + s for s in SUFFIXES[family.type]}
    return names


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_dashboard_queries_only_metrics_the_server_exports() -> None:
    used = {m for e in dashboard_exprs() for m in re.findall(r"\bqipo_[a-z_]+", e)}
    assert used, "the dashboard queries no qipo_* metric"
    assert used <= exported_names(), f"unknown metrics in {DASHBOARD.name}: {sorted(used - exported_names())}"
    assert set(REQUIRED) <= used, f"dashboard lacks {sorted(set(REQUIRED) - used)}"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    app = create_app(ServeSettings(registry=str(tmp_path_factory.mktemp("registry"))))
    return {getattr(r, "path", "") for r in app.routes}


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "deploy/k8s").rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") != "Kustomization"]
    return docs


def test_kubernetes_probes_hit_real_routes_and_rollouts_keep_capacity(routes: set[str]) -> None:
    deployments = [d for d in k8s_docs() if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"qipo-api", "qipo-api-gpu"}
    for dep in deployments:
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
        assert container["resources"]["requests"] and container["resources"]["limits"]
    gpu = next(d for d in deployments if d["metadata"]["name"] == "qipo-api-gpu")
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    kinds = {d["kind"] for d in k8s_docs()}
    assert {"Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert "StatefulSet" in kinds


def test_compose_topology(routes: set[str]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert int(services["api"]["deploy"]["replicas"].strip("${}").split(":-")[-1]) >= 2
    assert "--appendonly" in services["redis"]["command"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dep == "publisher" else "service_healthy"
            assert cond["condition"] == expected, f"{name} → {dep}"
            assert dep == "publisher" or "healthcheck" in services[dep], f"{dep} has no healthcheck"
    assert services["api"]["healthcheck"]["test"][-1] in routes
    (device,) = services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert services["api-gpu"]["profiles"] == ["gpu"] and device["capabilities"] == ["gpu"]
    # The GPU replica is the serving target on a CUDA base (no stage of its own for the classic builder).
    assert services["api-gpu"]["build"]["target"] == services["api"]["build"]["target"] == "serve"
    assert services["api-gpu"]["build"]["args"]["QIPO_EXTRA"] == "gpu"
    # The default `docker compose up` needs no image beyond those it builds and redis/nginx/prometheus.
    assert {name for name, svc in services.items() if not svc.get("profiles")} == {
        "redis",
        "publisher",
        "api",
        "lb",
        "prometheus",
    }
    assert services["grafana"]["profiles"] == ["grafana"]
    # The prometheus job scrapes replicas individually (DNS service discovery), not the balancer.
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["api"]
