"""The registry contract on both backends: numbering, immutability, compare-and-set races, history, gc."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from service.registry import ConflictError, DirectoryRegistry, NotFoundError, Registry, RegistryError
from service.registry.redis_registry import RedisRegistry
from tests.service.registry_fixtures import MODEL


def test_versions_are_numbered_per_model_and_immutable(any_registry: Registry, artifacts: list[Path]) -> None:
    v1 = any_registry.publish(artifacts[0])
    v2 = any_registry.publish(artifacts[1])
    assert (v1.version, v2.version) == (1, 2)
    assert any_registry.models() == [MODEL]
    assert [mv.version for mv in any_registry.versions(MODEL)] == [1, 2]
    assert any_registry.get(MODEL, 2).manifest.training_config == {"seed": 2}
    with pytest.raises(NotFoundError):
        any_registry.get(MODEL, 3)
    # the same bytes again are a new version; version 1 is untouched
    assert any_registry.publish(artifacts[0]).version == 3
    assert [mv.version for mv in any_registry.versions(MODEL)] == [1, 2, 3]
    assert any_registry.get(MODEL, 1).published_at < any_registry.get(MODEL, 3).published_at


def test_promote_rollback_history_and_generation(any_registry: Registry, artifacts: list[Path]) -> None:
    for art in artifacts[:2]:
        any_registry.publish(art)
    gen0 = any_registry.generation()
    any_registry.promote(MODEL, "production", 1)
    any_registry.promote(MODEL, "production", 2)
    assert any_registry.resolve(MODEL, "production") == 2
    back = any_registry.rollback(MODEL, "production")
    assert (back.from_version, back.to_version) == (2, 1)
    assert any_registry.generation() == gen0 + 3
    moves = [(m.from_version, m.to_version) for m in any_registry.history(MODEL, "production")]
    assert moves == [(None, 1), (1, 2), (2, 1)]
    with pytest.raises(NotFoundError):
        any_registry.promote(MODEL, "production", 9)
    with pytest.raises(RegistryError, match="invalid"):
        any_registry.promote(MODEL, "9lives", 1)


def own_handle(reg: Registry) -> Registry:
    if isinstance(reg, RedisRegistry):
        return RedisRegistry(reg.url, prefix=reg.prefix)
    assert isinstance(reg, DirectoryRegistry)
    return DirectoryRegistry(reg.root)


def test_two_promoters_race_exactly_one_wins(any_registry: Registry, artifacts: list[Path]) -> None:
    for art in artifacts:
        any_registry.publish(art)
    any_registry.promote(MODEL, "production", 1)
    rounds = 15
    for _ in range(rounds):
        current = any_registry.aliases(MODEL)["production"]
        targets = [v for v in (1, 2, 3) if v != current]
        barrier = threading.Barrier(2)
        results: list[str] = []

        def promoter(target: int, expected: int, barrier: threading.Barrier, results: list[str]) -> None:
            reg = own_handle(any_registry)  # each promoter has its own connection / file handles
            barrier.wait()
            try:
                reg.set_alias(MODEL, "production", target, expected=expected, reason="race")
                results.append(f"won {target}")
            except ConflictError:
                results.append("lost")

        threads = [threading.Thread(target=promoter, args=(t, current, barrier, results)) for t in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results)[0] == "lost" and sorted(results)[1].startswith("won"), results
        winner = int(next(x for x in results if x.startswith("won")).split()[1])
        assert any_registry.aliases(MODEL)["production"] == winner
    history = any_registry.history(MODEL, "production")
    assert len(history) == 1 + rounds  # the initial promotion plus one move per race
    for prev, move in itertools.pairwise(history):
        assert move.from_version == prev.to_version  # no lost update: every move starts where the last ended
    print(f"\n{rounds} races: {rounds} winners, {rounds} losers, history has {len(history)} moves")


def test_canary_share_and_gc(any_registry: Registry, artifacts: list[Path]) -> None:
    for art in artifacts:
        any_registry.publish(art)
    any_registry.promote(MODEL, "production", 2)
    assert any_registry.canary_share(MODEL) == 0.0
    gen = any_registry.generation()
    any_registry.set_canary_share(MODEL, 0.25)
    assert any_registry.canary_share(MODEL) == 0.25 and any_registry.generation() == gen + 1
    with pytest.raises(RegistryError, match="between 0 and 1"):
        any_registry.set_canary_share(MODEL, 1.5)
    assert any_registry.gc(MODEL, retention_seconds=3600) == []  # all too young
    assert any_registry.gc(MODEL, retention_seconds=0, dry_run=True) == [1]
    assert [mv.version for mv in any_registry.versions(MODEL)] == [1, 2, 3]
    # v2 is production, v3 is the newest: only v1 may go
    assert any_registry.gc(MODEL, retention_seconds=0) == [1]
    assert [mv.version for mv in any_registry.versions(MODEL)] == [2, 3]
    with pytest.raises(NotFoundError):
        any_registry.promote(MODEL, "production", 1)


def test_pull_verifies(any_registry: Registry, artifacts: list[Path], tmp_path: Path) -> None:
    any_registry.publish(artifacts[0])
    dest = any_registry.pull(MODEL, 1, tmp_path / "pulled")
    assert (dest / "policy.onnx").read_bytes() == (artifacts[0] / "policy.onnx").read_bytes()
    assert (dest / "manifest.json").read_bytes() == (artifacts[0] / "manifest.json").read_bytes()
