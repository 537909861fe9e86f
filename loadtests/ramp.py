"""Ramp: from 1 robot to QIPO_ROBOTS (default 40) over the first 70% of QIPO_DURATION (default 60 s),
then hold; finds where p99 leaves the control period.

    locust -f loadtests/ramp.py --headless -H http://127.0.0.1:8080
"""

from __future__ import annotations

from locust import LoadTestShape
from robots import Robot, env_float


class RampRobot(Robot):
    pass


class Ramp(LoadTestShape):
    robots = int(env_float("QIPO_ROBOTS", 40))
    duration = env_float("QIPO_DURATION", 60)

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            return None
        frac = min(1.0, t / (0.7 * self.duration))
        return max(1, round(frac * self.robots)), max(1.0, self.robots / 5.0)
