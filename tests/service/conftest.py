"""Fixtures for the tests in this folder: registry fixtures (artifacts, isolated Redis prefixes), and for
serving a small exported artifact, a directory registry that serves it and a real uvicorn server.

The artifact is an untrained FlowPolicy exported with the real exporter: serving does not care whether the
weights are good, and building it takes a second instead of a training run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.settings import ServeSettings
from tests.helpers import Running, running_server
from tests.service.registry_fixtures import any_registry, artifacts, redis_registry  # noqa: F401

MODEL = "pendulum-qipo"


def build_artifact(
    out: Path, hidden: int = 32, blocks: int = 1, steps: int = 5, seed: int = 0, horizon: int = 1
) -> Path:
    """Export an untrained Pendulum-shaped FlowPolicy (obs 3, act 1 in [-2, 2]) as a real artifact; with
    `horizon` H > 1 a chunked one (Pendulum-v1's period, `replace` inpainting)."""
    import numpy as np
    import torch

    from training.export import export_artifact
    from training.networks import VelocityNet
    from training.paths import make_path
    from training.policy import FlowPolicy, Normalizer

    torch.manual_seed(seed)
    norm = Normalizer(np.zeros(3), np.ones(3), np.array([-2.0]), np.array([2.0]))
    net = VelocityNet(3, horizon, hidden, blocks, 8)
    policy = FlowPolicy(net, norm, make_path("qipo-ot"), steps, horizon=horizon)
    chunked: dict[str, Any] = {"env_id": "Pendulum-v1", "inpainting": "replace"} if horizon > 1 else {}
    export_artifact(
        policy,
        out,
        name=MODEL,
        variant="qipo-ot",
        training_config={},
        dataset={"name": "untrained"},
        scores={},
        **chunked,
    )
    return out


@pytest.fixture(scope="session")
def serve_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    return build_artifact(tmp_path_factory.mktemp("serve-artifact"))


@pytest.fixture(scope="session")
def serve_registry(serve_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.registry import open_registry

    root = tmp_path_factory.mktemp("serve-registry")
    reg = open_registry(str(root), "qipo")
    mv = reg.publish(serve_artifact)
    reg.promote(mv.name, "production", mv.version)
    return root


def serve_settings(registry: Path, cache: Path, **overrides: Any) -> ServeSettings:
    return ServeSettings.model_validate(
        {"registry": str(registry), "cache_dir": cache, "model_name": MODEL, "warmup_batches": 1} | overrides
    )


@pytest.fixture(scope="module")
def server(serve_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server per test module (start-up loads and warms the model once)."""
    from service.app import create_app

    app = create_app(
        serve_settings(serve_registry, tmp_path_factory.mktemp("cache"), max_body_bytes=64 * 1024)
    )
    with running_server(app) as running:
        yield running
