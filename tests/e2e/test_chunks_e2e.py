"""Action chunks end to end: a tiny chunked QIPO policy (Pendulum, H = 4, a few hundred steps) trained,
exported, published to the real Redis under its own key prefix, served by real uvicorn and ONNX Runtime,
and executed by `ChunkedController` through `RemotePolicy` in a Pendulum loop under a delay: simulated
(d = 1 and 2 control steps, deterministic) and real (a worker thread, the measured latency).

Checked: the reply's shape and the manifest's chunk fields, that the executor never replaces an action it
has committed, and that the inpainted chunk's committed part lies within COMMITTED_ATOL of the previous
chunk (the OT path ends at the committed actions; the env-unit round trip through the unit box costs a
few ulps, and msgpack carries float32 exactly).
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from qipo_client import PolicyClient, RemotePolicy, Seeds, step_seed
from qipo_client.chunking import ChunkedController, SimulatedDelay, ThreadRunner

from service.registry.redis_registry import RedisRegistry
from tests.conftest import TINY_CONFIG
from tests.helpers import running_server
from tests.service.registry_fixtures import REDIS_URL, redis_registry  # noqa: F401

H, PERIOD, NAME = 4, 0.05, "pendulum-chunks-e2e"
COMMITTED_ATOL = 1e-5


def train_and_export(data: Path, out: Path) -> Path:
    from training.checkpoint import policy_from_checkpoint
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.export import export_artifact
    from training.qipo import QIPOTrainer

    cfg = QIPOConfig.model_validate(TINY_CONFIG | {"action_horizon": H})
    trainer = QIPOTrainer(load_dataset(data), cfg, progress=False)
    trainer.fit()
    trainer.save(out / "run")
    policy, cfg, _ = policy_from_checkpoint(out / "run")
    export_artifact(
        policy,
        out / "artifact",
        name=NAME,
        variant=cfg.variant,
        training_config=cfg.model_dump(mode="json"),
        dataset={"name": "pendulum/mixed-v0"},
        scores={},
        env_id="Pendulum-v1",
        inpainting="soft",
    )
    return out / "artifact"


class StepClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def drive(ctrl: ChunkedController, steps: int, clock: StepClock | None, seed: int) -> list[np.ndarray]:
    """Pendulum under the controller for `steps` control steps; the executed actions."""
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    executed = []
    for _ in range(steps):
        started = time.monotonic()
        action = ctrl.step(obs)
        executed.append(action)
        obs, *_ = env.step(action)
        if clock is not None:
            clock.t += PERIOD
        else:
            time.sleep(max(0.0, PERIOD - (time.monotonic() - started)))
    env.close()
    return executed


def check_switches(ctrl: ChunkedController, executed: list[np.ndarray]) -> int:
    """Every committed action ran as it was sent, and every inpainted chunk kept it; the switches checked."""
    checked = 0
    for sw in ctrl.switches:
        assert sw.chunk.shape == (H, 1) and np.all(np.abs(sw.chunk) <= 2.0)
        for i in range(sw.committed):
            if sw.request_step + i < len(executed):  # never replaced: what ran is what was committed
                np.testing.assert_array_equal(executed[sw.request_step + i], sw.prefix[i])
        if sw.inpainted and sw.committed:
            gap = float(np.abs(sw.chunk[: sw.committed] - sw.prefix[: sw.committed]).max())
            assert gap <= COMMITTED_ATOL, (sw, gap)
            checked += 1
    return checked


def test_chunked_policy_served_and_executed_under_delay(
    pendulum_dataset_dir: Path,
    redis_registry: RedisRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    from service.app import create_app
    from service.settings import ServeSettings

    artifact = train_and_export(pendulum_dataset_dir, tmp_path)
    mv = redis_registry.publish(artifact)
    redis_registry.promote(NAME, "production", mv.version)
    settings = ServeSettings.model_validate(
        {
            "registry": REDIS_URL,
            "registry_prefix": redis_registry.prefix,
            "model_name": NAME,
            "cache_dir": tmp_path / "cache",
            "warmup_batches": 1,
        }
    )
    with running_server(create_app(settings)) as server:
        with PolicyClient(server.url, timeout=10) as client:
            manifest = client.models()["manifest"]
            assert manifest["action_horizon"] == H and manifest["inpainting"] == "soft"
            assert manifest["control_period_s"] == pytest.approx(PERIOD)
            reply = client.act([1.0, 0.0, 0.0], seed=1)
            assert reply.chunk.shape == (H, 1) and reply.action_horizon == H
            assert reply.control_period_s == pytest.approx(PERIOD) and reply.version == mv.version
        with RemotePolicy(server.url, robot_id="e2e-robot") as remote:
            assert remote.metadata.action_horizon == H
            for delay in (1, 2):
                clock = StepClock()
                ctrl = ChunkedController(
                    remote,
                    runner=SimulatedDelay(delay, PERIOD, clock),
                    clock=clock,
                    execute_steps=2,
                    noise=lambda k: Seeds([step_seed(0, 0, k)]),
                    history=200,
                )
                executed = drive(ctrl, 60, clock, seed=delay)
                assert ctrl.latency_steps() == delay and ctrl.starved == 1  # the first chunk only
                assert check_switches(ctrl, executed) >= 20
                assert {sw.committed for sw in ctrl.switches if sw.inpainted} == {delay}
            runner = ThreadRunner()
            try:  # real time: the reply's measured latency sets d
                ctrl = ChunkedController(remote, runner=runner, history=200)
                executed = drive(ctrl, 30, None, seed=3)
            finally:
                runner.close()
            assert check_switches(ctrl, executed) >= 1 and ctrl.switches[-1].inpainted
