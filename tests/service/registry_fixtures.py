"""Fixtures for the registry, follower and upgrade tests: distinguishable artifacts and isolated registries.

Artifacts are untrained `FlowPolicy`s exported with the real exporter (different seeds give different
actions), so these tests do not wait for a training run. Redis registries get a fresh `qipo-test-<uuid>`
prefix and every key under it is deleted afterwards.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.registry import DirectoryRegistry, Registry
from service.registry.redis_registry import RedisRegistry

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "pendulum-qipo"


def build_artifact(out: Path, seed: int, name: str = MODEL, obs_dim: int = 3, act_dim: int = 1) -> Path:
    """Export an untrained flow policy with `seed`, Pendulum-shaped by default (obs 3, act 1, bounds ±2)."""
    import numpy as np
    import torch

    from training.export import export_artifact
    from training.networks import VelocityNet
    from training.paths import OTPath
    from training.policy import FlowPolicy, Normalizer

    torch.manual_seed(seed)
    net = VelocityNet(obs_dim, act_dim, hidden=32, blocks=1, time_dim=8)
    bound = 2.0 * np.ones(act_dim)
    norm = Normalizer(np.zeros(obs_dim), np.ones(obs_dim) * 2.0, -bound, bound)
    policy = FlowPolicy(net, norm, OTPath(), steps=4)
    export_artifact(
        policy, out, name=name, variant="bc", training_config={"seed": seed}, dataset={}, scores={}
    )
    return out


@functools.cache
def build_artifacts() -> list[Path]:
    """Built once per process (each test module imports the fixture, which pytest would run per module)."""
    root = Path(tempfile.mkdtemp(prefix="qipo-artifacts-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return [build_artifact(root / f"seed{s}", s) for s in (1, 2, 3)]


@pytest.fixture(scope="session")
def artifacts() -> list[Path]:
    """Three distinguishable artifacts of the same model (seeds 1, 2, 3)."""
    pytest.importorskip("torch")
    return build_artifacts()


@pytest.fixture
def redis_registry() -> Iterator[RedisRegistry]:
    reg = RedisRegistry(REDIS_URL, prefix=f"qipo-test-{uuid.uuid4().hex[:12]}")
    if not reg.ping():
        pytest.fail("Redis is not answering on 127.0.0.1:6379; run scripts/redis-up.sh (make test does)")
    yield reg
    reg.delete_prefix()
    reg.close()


@pytest.fixture(params=["directory", "redis"])
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """Each interface test runs against both backends."""
    if request.param == "directory":
        yield DirectoryRegistry(tmp_path / "registry")
        return
    reg = RedisRegistry(REDIS_URL, prefix=f"qipo-test-{uuid.uuid4().hex[:12]}")
    yield reg
    reg.delete_prefix()
    reg.close()
