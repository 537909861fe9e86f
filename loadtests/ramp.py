"""Ramp: from 1 robot to QIPO_ROBOTS (default 40) over the first 70% of QIPO_DURATION (default 60 s),
then hold; finds where p99 leaves the control period.

    locust -f loadtests/ramp.py --headless -H http://127.0.0.1:8080
"""

from __future__ import annotations

from robots import RampThenHold, Robot, env_float


class RampRobot(Robot):
    pass


class Ramp(RampThenHold):
    robots = int(env_float("QIPO_ROBOTS", 40))
    duration = env_float("QIPO_DURATION", 60)
    ramp_s = 0.7 * duration
