"""Upgrade under load: two replicas, robots acting continuously, production promoted and rolled back while a
canary runs. Zero failed requests; versions change only at promotions; no episode mixes two versions."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from service import canary
from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import (
    FleetResult,
    Observation,
    canary_robots,
    check_fleet,
    replicas,
    robot,
)
from tests.service.registry_fixtures import MODEL, REDIS_URL

CANARY_SHARE = 0.25


async def drive(
    reg: RedisRegistry, urls: list[str], robots: list[str], seconds: float, moves: int, episode_steps: int
) -> FleetResult:
    result = FleetResult()
    out: list[Observation] = []
    stop_at = time.monotonic() + seconds
    tasks = [
        asyncio.create_task(
            robot(r, urls[i % len(urls)], i % len(urls), stop_at, out, episode_steps=episode_steps)
        )
        for i, r in enumerate(robots)
    ]
    gap = seconds / (moves + 1)
    for k in range(moves):
        await asyncio.sleep(gap)
        if k % 2 == 0:
            move = await asyncio.to_thread(reg.promote, MODEL, "production", 2)
        else:
            move = await asyncio.to_thread(reg.rollback, MODEL, "production")
        result.moves.append((time.monotonic(), "production", move.to_version))
    await asyncio.gather(*tasks)
    result.observations = out
    return result


def run_upgrade(
    artifacts: list[Path], tmp_path: Path, robots_n: int, seconds: float, moves: int, episode_steps: int
) -> None:
    prefix = f"qipo-test-{uuid.uuid4().hex[:12]}"
    reg = RedisRegistry(REDIS_URL, prefix=prefix)
    try:
        for art in artifacts:
            reg.publish(art)
        reg.promote(MODEL, "production", 1)
        canary.start(reg, MODEL, 3, CANARY_SHARE)
        with replicas(2, REDIS_URL, prefix, tmp_path, poll_seconds=0.5) as reps:
            for rep in reps:
                status = rep.ready()
                assert status["version"] == 1 and status["canary"] == {"version": 3, "share": CANARY_SHARE}
            robots = [f"robot-{i:02d}" for i in range(robots_n)]
            result = asyncio.run(drive(reg, [r.url for r in reps], robots, seconds, moves, episode_steps))
            statuses = [rep.ready() for rep in reps]
        canary_set = canary_robots(robots, CANARY_SHARE, MODEL, 3)
        counts = check_fleet(result, robots, canary_set, canary_version=3)
        print(f"\nupgrade under load: {counts}")
        assert counts["promotions"] == moves and counts["requests"] > robots_n * 10
        assert 0 < len(canary_set) < robots_n
        production_robots = [r for r in robots if r not in canary_set]
        changed = {o.robot for o in result.observations if o.version not in (None, 1, 3)}
        assert changed == set(production_robots)  # every production robot reached version 2 at some point
        # each promotion changed each production robot's version exactly once (no flapping between replicas)
        assert counts["version_changes"] == len(production_robots) * moves
        final = 2 if moves % 2 else 1
        for status in statuses:
            assert status["version"] == final and status["last_error"] is None
        assert len(reg.history(MODEL, "production")) == 1 + moves
    finally:
        reg.delete_prefix()
        reg.close()


def test_upgrade_under_load_short(artifacts: list[Path], tmp_path: Path) -> None:
    run_upgrade(artifacts, tmp_path, robots_n=16, seconds=9.0, moves=2, episode_steps=5)


@pytest.mark.slow
def test_upgrade_under_load_32_robots_30s_five_moves(artifacts: list[Path], tmp_path: Path) -> None:
    run_upgrade(artifacts, tmp_path, robots_n=32, seconds=30.0, moves=5, episode_steps=10)
