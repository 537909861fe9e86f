"""Canary routing: a stable hash of `robot_id` decides whether a robot is served the `canary` alias.

A robot's bucket depends only on its id and the canary version, so every replica routes it the same way and
it stays on one version until the registry moves (a canary start, promotion or abort). Requests without a
`robot_id` always get production: anonymous traffic never lands on an experiment.

The registry operations here are what `qipo registry canary start|promote|abort` and the admin routes run.
"""

from __future__ import annotations

import functools
import hashlib

from service.registry import CANARY_ALIAS, AliasMove, Registry, RegistryError
from service.registry.base import check_share


def bucket(robot_id: str, salt: str) -> float:
    """A robot's position in [0, 1): uniform over ids, stable across processes and restarts."""
    digest = hashlib.sha256(f"{salt}\x00{robot_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@functools.lru_cache(maxsize=1 << 16)
def _canary_bucket(robot_id: str, name: str, canary_version: int) -> float:
    """`bucket` per robot and canary, remembered: a robot asks many times a second, the answer never moves."""
    return bucket(robot_id, f"{name}:{canary_version}")


def routes_to_canary(robot_id: str | None, share: float, name: str, canary_version: int) -> bool:
    if robot_id is None or share <= 0.0:
        return False
    return _canary_bucket(robot_id, name, canary_version) < share


def start(
    registry: Registry, name: str, ref: str | int, share: float, production: str = "production"
) -> AliasMove:
    """Point `canary` at `ref` and route `share` of robots to it (refused if it equals production)."""
    check_share(share)  # before anything moves
    target = registry.resolve(name, ref)
    prod = registry.aliases(name).get(production)
    if prod == target:
        raise RegistryError(
            f"{name} version {target} is already {production}; a canary needs another version"
        )
    move = registry.promote(name, CANARY_ALIAS, target, reason=f"canary start {share:.0%}")
    registry.set_canary_share(name, share)
    return move


def promote(registry: Registry, name: str, production: str = "production") -> AliasMove:
    """Production takes the canary's version, then the canary alias goes: canary robots never change."""
    aliases = registry.aliases(name)
    if CANARY_ALIAS not in aliases:
        raise RegistryError(f"{name} has no canary to promote; start one with `qipo registry canary start`")
    version = aliases[CANARY_ALIAS]
    move = registry.set_alias(
        name, production, version, expected=aliases.get(production), reason="canary promote"
    )
    registry.set_alias(name, CANARY_ALIAS, None, expected=version, reason="canary promoted")
    registry.set_canary_share(name, 0.0)
    return move


def abort(registry: Registry, name: str) -> AliasMove:
    """Remove the canary alias: its robots go back to production at their next request."""
    aliases = registry.aliases(name)
    if CANARY_ALIAS not in aliases:
        raise RegistryError(f"{name} has no canary to abort")
    move = registry.set_alias(name, CANARY_ALIAS, None, expected=aliases[CANARY_ALIAS], reason="canary abort")
    registry.set_canary_share(name, 0.0)
    return move
