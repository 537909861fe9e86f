"""Steady load: QIPO_ROBOTS robots (default 10) at QIPO_ROBOT_HZ for QIPO_DURATION seconds (default 30).

locust -f loadtests/steady.py --headless -H http://127.0.0.1:8080
"""

from __future__ import annotations

from robots import RampThenHold, Robot, env_float


class SteadyRobot(Robot):
    pass


class Steady(RampThenHold):
    robots = int(env_float("QIPO_ROBOTS", 10))
    duration = env_float("QIPO_DURATION", 30)
