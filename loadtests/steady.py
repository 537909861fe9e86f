"""Steady load: QIPO_ROBOTS robots (default 10) at QIPO_ROBOT_HZ for QIPO_DURATION seconds (default 30).

locust -f loadtests/steady.py --headless -H http://127.0.0.1:8080
"""

from __future__ import annotations

from locust import LoadTestShape
from robots import Robot, env_float


class SteadyRobot(Robot):
    pass


class Steady(LoadTestShape):
    robots = int(env_float("QIPO_ROBOTS", 10))
    duration = env_float("QIPO_DURATION", 30)

    def tick(self) -> tuple[int, float] | None:
        if self.get_run_time() >= self.duration:
            return None
        return self.robots, max(1.0, self.robots / 2.0)
