"""Upgrade during load: steady robots while the served alias moves to a new version and back.

At QIPO_UPGRADE_AT × duration (default 0.3) the alias QIPO_MODEL_REF (default production) of
QIPO_MODEL_NAME is promoted to QIPO_UPGRADE_TO (default: the newest version); at QIPO_ROLLBACK_AT
(default 0.65) it is rolled back. QIPO_ROBOTS robots (default 10), reached over QIPO_RAMP_S seconds.
Replicas follow the registry on their own (hot reload), so the robots
must see the version change with no failed request. QIPO_UPGRADE_MODE=restart instead runs
QIPO_RESTART_CMD (default `scripts/stack.sh restart`, a rolling restart) after each alias move, for
builds whose replicas do not follow the registry.

    QIPO_REGISTRY=redis://127.0.0.1:6379/0 locust -f loadtests/upgrade.py --headless -H http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from robots import RECORD, RampThenHold, Robot, env_float

from service.registry import open_registry

DURATION = env_float("QIPO_DURATION", 30)


class UpgradeRobot(Robot):
    pass


class SteadyAfterRamp(RampThenHold):
    robots = int(env_float("QIPO_ROBOTS", 10))
    ramp_s = env_float("QIPO_RAMP_S", 0)
    duration = DURATION


def _after_move() -> None:
    if os.environ.get("QIPO_UPGRADE_MODE", "registry") != "restart":
        return
    cmd = shlex.split(os.environ.get("QIPO_RESTART_CMD", "bash scripts/stack.sh restart"))
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


def _upgrade(environment: Environment) -> None:
    registry = open_registry(
        os.environ.get("QIPO_REGISTRY", "./registry"), os.environ.get("QIPO_REGISTRY_PREFIX", "qipo")
    )
    name = os.environ.get("QIPO_MODEL_NAME", "pendulum-qipo")
    alias = os.environ.get("QIPO_MODEL_REF", "production")
    target = os.environ.get("QIPO_UPGRADE_TO") or str(registry.latest(name))
    start = time.time()

    def log(event: str, **fields: Any) -> None:
        RECORD.upgrade_log.append({"t": round(time.time() - RECORD.started, 3), "event": event, **fields})

    try:
        gevent.sleep(max(0.0, env_float("QIPO_UPGRADE_AT", 0.3) * DURATION - (time.time() - start)))
        move = registry.promote(name, alias, target, reason="loadtest upgrade")
        log("promote", alias=alias, from_version=move.from_version, to_version=move.to_version)
        _after_move()
        gevent.sleep(max(0.0, env_float("QIPO_ROLLBACK_AT", 0.65) * DURATION - (time.time() - start)))
        move = registry.rollback(name, alias)
        log("rollback", alias=alias, from_version=move.from_version, to_version=move.to_version)
        _after_move()
    except Exception as exc:  # reported in the summary and as a failed run
        log("error", error=f"{type(exc).__name__}: {exc}")
        environment.process_exit_code = 1


@events.test_start.add_listener
def _start_upgrade(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_upgrade, environment)
