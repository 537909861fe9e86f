"""Locust robots for the QIPO policy server: each simulated robot runs a closed control loop at a fixed
rate (QIPO_ROBOT_HZ, default 50 Hz), sending its state to POST /act and stepping a Pendulum-v1 model
with the returned torque. Scenario files (steady.py, ramp.py, upgrade.py) import `Robot` and add a
load shape; the summary (p50/p99, deadline misses, versions served) prints at the end and, with
QIPO_LOCUST_SUMMARY=path.json, is written as JSON.

Deadline misses are counted two ways: the server's 504 (the request's `deadline_ms` = one control period
passed before compute; the robot uses its own fallback, so it is not a failed request) and replies that
arrived later than one control period at the robot. Any other non-200 answer is a failure.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, constant_pacing, events, task
from locust.env import Environment

CONTROL_HZ = float(os.environ.get("QIPO_ROBOT_HZ", "50"))
PERIOD_S = 1.0 / CONTROL_HZ
DEADLINE_MS = float(os.environ.get("QIPO_ROBOT_DEADLINE_MS", str(1000.0 * PERIOD_S)))


@dataclass
class RunRecord:
    """What the robots saw, shared by all users of this process (gevent: one thread, but keep it safe)."""

    started: float = field(default_factory=time.time)
    requests: int = 0
    failures: int = 0
    deadline_504: int = 0
    late_replies: int = 0
    versions: Counter[int] = field(default_factory=Counter)
    # whole seconds since start → {version: replies}: when each version was served, and the mix while
    # replicas disagree during an upgrade
    timeline: dict[int, Counter[int]] = field(default_factory=dict)
    upgrade_log: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, version: int, elapsed_s: float) -> None:
        with self._lock:
            self.requests += 1
            self.versions[version] += 1
            if elapsed_s > PERIOD_S:
                self.late_replies += 1
            self.timeline.setdefault(int(time.time() - self.started), Counter())[version] += 1

    def summary(self, env: Environment) -> dict[str, Any]:
        total = env.stats.total
        return {
            "started_at": self.started,
            "control_hz": CONTROL_HZ,
            "deadline_ms": DEADLINE_MS,
            "duration_s": round(time.time() - self.started, 2),
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": round(total.total_rps, 1),
            "p50_ms": total.get_response_time_percentile(0.5),
            "p90_ms": total.get_response_time_percentile(0.9),
            "p99_ms": total.get_response_time_percentile(0.99),
            "max_ms": total.max_response_time,
            "deadline_misses_504": self.deadline_504,
            "late_replies": self.late_replies,
            "versions_served": {str(k): v for k, v in sorted(self.versions.items())},
            "version_timeline": [
                [second, {str(v): n for v, n in sorted(c.items())}]
                for second, c in sorted(self.timeline.items())
            ],
            "upgrade_log": self.upgrade_log,
        }


RECORD = RunRecord()


def pendulum_step(theta: float, theta_dot: float, torque: float) -> tuple[float, float]:
    """Pendulum-v1 dynamics (g=10, m=l=1, dt=0.05, |u|≤2, |θ̇|≤8)."""
    u = max(-2.0, min(2.0, torque))
    theta_dot = theta_dot + (3 * 10.0 / 2 * math.sin(theta) + 3.0 * u) * 0.05
    theta_dot = max(-8.0, min(8.0, theta_dot))
    return theta + theta_dot * 0.05, theta_dot


class Robot(FastHttpUser):
    """One robot: a closed loop at CONTROL_HZ against POST /act, sticky by robot_id."""

    abstract = True
    wait_time = constant_pacing(PERIOD_S)
    obs_dim = 3

    def on_start(self) -> None:
        self.robot_id = f"robot-{uuid.uuid4().hex[:8]}"
        self.theta = random.uniform(-math.pi, math.pi)
        self.theta_dot = random.uniform(-1.0, 1.0)
        with self.client.get("/v1/models", name="/v1/models", catch_response=True) as reply:
            if reply.status_code == 200 and reply.json():
                self.obs_dim = int(reply.json()["manifest"]["obs_dim"])
            else:
                reply.failure(f"GET /v1/models answered {reply.status_code}: {reply.text[:200]}")

    def observation(self) -> list[float]:
        if self.obs_dim == 3:  # Pendulum: close the loop on the returned torque
            return [math.cos(self.theta), math.sin(self.theta), self.theta_dot]
        return [random.gauss(0.0, 1.0) for _ in range(self.obs_dim)]

    @task
    def act(self) -> None:
        body = {"state": self.observation(), "robot_id": self.robot_id, "deadline_ms": DEADLINE_MS}
        start = time.perf_counter()
        with self.client.post("/act", json=body, name="/act", catch_response=True) as reply:
            elapsed = time.perf_counter() - start
            if reply.status_code == 504:  # deadline passed before compute: the robot's fallback acts
                RECORD.deadline_504 += 1
                reply.success()
                return
            if reply.status_code != 200:
                reply.failure(f"/act answered {reply.status_code}: {(reply.text or '')[:200]}")
                return
            data = reply.json()
            action = data.get("action")
            if not isinstance(action, list) or not action:
                reply.failure(f"/act reply has no action: {str(data)[:200]}")
                return
            RECORD.reply(int(data["version"]), elapsed)
            if self.obs_dim == 3:
                self.theta, self.theta_dot = pendulum_step(self.theta, self.theta_dot, float(action[0]))


@events.test_start.add_listener
def _reset(environment: Environment, **_: Any) -> None:
    RECORD.started = time.time()
    RECORD.timeline.clear()


@events.quitting.add_listener
def _report(environment: Environment, **_: Any) -> None:
    summary = RECORD.summary(environment)
    print("qipo-robots summary: " + json.dumps(summary))
    path = os.environ.get("QIPO_LOCUST_SUMMARY")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=2))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class RampThenHold(LoadTestShape):
    """`robots` robots reached linearly over `ramp_s` seconds (0: all at once), held until `duration`."""

    abstract = True
    robots = 10
    ramp_s = 0.0
    duration = 30.0

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            return None
        frac = 1.0 if self.ramp_s <= 0 else min(1.0, t / self.ramp_s)
        return max(1, round(frac * self.robots)), max(1.0, self.robots / 2.0)
