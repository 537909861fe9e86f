"""Which datasets `qipo data make ENV` can write, and which of them the benchmark grid runs by default.

One table, read by the CLI (what a name means, which kinds it accepts), the grid (`training.bench.grid`
checks a run's env and dataset here and takes each env's default datasets from `grid`) and the grid's
summary (its row order). It imports no generator, so asking costs nothing.

The suite covers data a user brings, not only one generator family: locomotion with SAC behaviour actors
(Hopper, HalfCheetah, Walker2d), a reaching arm with short episodes and a large random share (Reacher),
and the scripted Pendulum. Each SAC env's behaviour actor is committed (`training/data/policies/`), so every
dataset rebuilds in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

MUJOCO_KINDS = ("random", "medium", "medium-replay", "medium-expert")


@dataclass(frozen=True)
class Family:
    """One `qipo data make` target."""

    env_id: str
    kinds: tuple[str, ...]  # what `qipo data make NAME` writes
    grid: tuple[str, ...]  # the grid's default datasets of this env (a subset of kinds)
    generator: str  # the module that makes them (for messages and docs)


FAMILIES: dict[str, Family] = {
    "hopper": Family("Hopper-v5", MUJOCO_KINDS, ("medium", "medium-replay", "medium-expert"), "mujoco"),
    "halfcheetah": Family("HalfCheetah-v5", MUJOCO_KINDS, ("medium", "medium-expert"), "mujoco"),
    "walker2d": Family("Walker2d-v5", MUJOCO_KINDS, ("medium", "medium-replay"), "mujoco"),
    "reacher": Family("Reacher-v5", ("expert", "noisy", "random", "mixed"), ("mixed",), "reacher"),
    "pendulum": Family("Pendulum-v1", ("expert", "medium", "random", "mixed"), ("mixed",), "pendulum"),
}
GRID_SUITE: tuple[tuple[str, str], ...] = tuple(
    (env, kind) for env, family in FAMILIES.items() for kind in family.grid
)


class SuiteError(ValueError):
    """An env or dataset name the suite does not know; the message lists the valid ones."""


def family(env: str) -> Family:
    if env not in FAMILIES:
        raise SuiteError(f"unknown env {env!r}; choose one of {list(FAMILIES)}")
    return FAMILIES[env]


def check_kinds(env: str, kinds: tuple[str, ...] | list[str]) -> None:
    """Refuse a dataset kind that `qipo data make ENV` cannot write, naming those it can."""
    known = family(env).kinds
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise SuiteError(
            f"unknown {env} dataset kind(s) {unknown}; `qipo data make {env}` writes {list(known)}"
        )
