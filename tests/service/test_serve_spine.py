"""A real uvicorn server on a loopback port serving a published artifact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.app import create_app
from service.registry import DirectoryRegistry
from service.settings import ServeSettings
from tests.helpers import running_server


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("registry")
    reg = DirectoryRegistry(root)
    mv = reg.publish(tiny_artifact)
    reg.promote(mv.name, "production", mv.version)
    settings = ServeSettings(registry=str(root), cache_dir=root / "cache", model_name=mv.name)
    with running_server(create_app(settings)) as running:
        yield running.url


def test_act_returns_finite_in_bounds_action_with_version(server: str) -> None:
    reply = httpx.post(f"{server}/act", json={"state": [1.0, 0.0, 0.5], "request_id": "r-1"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["action"]) == 1 and np.isfinite(body["action"]).all()
    assert -2.0 <= body["action"][0] <= 2.0
    assert body["model"] == "pendulum-qipo" and body["version"] == 1
    assert body["request_id"] == "r-1"
    assert set(body["timing"]) == {"queue_ms", "infer_ms", "total_ms"}


def test_batch_and_seed_are_reproducible(server: str) -> None:
    states = [[1.0, 0.0, 0.5], [0.0, 1.0, -2.0], [-1.0, 0.0, 3.0]]
    one = httpx.post(f"{server}/act", json={"states": states, "seed": 7}).json()
    two = httpx.post(f"{server}/act", json={"states": states, "seed": 7}).json()
    assert len(one["actions"]) == 3 and one["actions"] == two["actions"]


@pytest.mark.parametrize(
    ("body", "field", "phrase"),
    [
        ({"state": [1.0, 0.0]}, "state", "obs_dim=3"),
        ({"states": [[1.0, 0.0, 0.0], [1.0]]}, "states", "states[1] has 1 values"),
        ({"state": [1.0, "x", 0.0]}, "state", ""),
        ({"state": [1.0, 0.0, 1e39]}, "state", "NaN or Inf"),
        ({}, "", "exactly one of"),
        ({"state": [1.0, 0.0, 0.0], "states": [[1.0, 0.0, 0.0]]}, "", "exactly one of"),
        ({"state": [1.0, 0.0, 0.0], "deadline_ms": -1}, "deadline_ms", ""),
    ],
)
def test_bad_bodies_get_422_naming_the_field(server: str, body: dict, field: str, phrase: str) -> None:  # type: ignore[type-arg]
    reply = httpx.post(f"{server}/act", json=body)
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    text = str(detail)
    if field:
        assert any(field in [str(x) for x in d["loc"]] for d in detail), text
    assert phrase in text


def test_nan_literal_is_refused(server: str) -> None:
    reply = httpx.post(
        f"{server}/act", content=b'{"state": [NaN, 0.0, 0.0]}', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    assert "state" in reply.text


def test_health_ready_models_and_metrics(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["version"] == 1
    models = httpx.get(f"{server}/v1/models").json()
    assert models["manifest"]["obs_dim"] == 3
    metrics = httpx.get(f"{server}/metrics").text
    assert 'qipo_model_info{name="pendulum-qipo",version="1"} 1.0' in metrics
    assert "qipo_act_requests_total" in metrics and "qipo_batch_size_bucket" in metrics


def test_server_without_model_is_not_ready(tmp_path: Path) -> None:
    settings = ServeSettings(registry=str(tmp_path / "empty"), cache_dir=tmp_path / "cache")
    with running_server(create_app(settings)) as running:
        url = running.url
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert "no versions" in ready.json()["last_error"]
        act = httpx.post(f"{url}/act", json={"state": [1.0, 0.0, 0.0]})
        assert act.status_code == 503 and act.headers["retry-after"] == "1"
