"""Redis-only guarantees: chunked bytes checked on pull, atomic publish, events on the stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.registry import ConflictError, IntegrityError, UnavailableError
from service.registry.redis_registry import RedisRegistry
from tests.service.registry_fixtures import MODEL


def test_bytes_are_chunked_and_a_tampered_chunk_is_refused(
    redis_registry: RedisRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    redis_registry.chunk_bytes = 8 * 1024
    redis_registry.publish(artifacts[0])
    size = (artifacts[0] / "policy.onnx").stat().st_size
    base = redis_registry._k(MODEL, "v", 1, "c", "policy.onnx")
    n = len(list(redis_registry.client.scan_iter(match=f"{base}:*")))
    assert n == -(-size // (8 * 1024)) and n > 1
    chunk = redis_registry.client.get(f"{base}:2")
    assert isinstance(chunk, bytes)
    redis_registry.client.set(f"{base}:2", chunk[:100] + bytes([chunk[100] ^ 0xFF]) + chunk[101:])
    with pytest.raises(IntegrityError, match="tampered"):
        redis_registry.pull(MODEL, 1, tmp_path / "bad")
    assert not (tmp_path / "bad" / "manifest.json").exists()  # nothing usable left behind
    redis_registry.client.delete(f"{base}:3")
    with pytest.raises(IntegrityError, match="missing"):
        redis_registry.pull(MODEL, 1, tmp_path / "bad2")


def test_publish_that_dies_before_commit_leaves_nothing(
    redis_registry: RedisRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(**_kw: object) -> None:
        raise ConnectionError("publisher lost its connection before the commit")

    monkeypatch.setattr(redis_registry, "_commit", crash)
    with pytest.raises(UnavailableError, match="cannot reach Redis"):
        redis_registry.publish(artifacts[0])
    assert redis_registry.versions(MODEL) == [] and redis_registry.models() == []
    assert list(redis_registry.client.scan_iter(match=f"{redis_registry.prefix}:*")) == []
    monkeypatch.undo()
    assert redis_registry.publish(artifacts[0]).version == 1


def test_an_existing_version_is_never_overwritten(
    redis_registry: RedisRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    redis_registry.publish(artifacts[0])
    redis_registry.publish(artifacts[1])
    redis_registry.client.set(redis_registry._k(MODEL, "seq"), 1)  # a counter behind (e.g. restored backup)
    with pytest.raises(ConflictError, match="version 2 already exists"):
        redis_registry.publish(artifacts[2])
    pulled = redis_registry.pull(MODEL, 2, tmp_path / "v2")
    assert (pulled / "policy.onnx").read_bytes() == (artifacts[1] / "policy.onnx").read_bytes()
    assert list(redis_registry.client.scan_iter(match=f"{redis_registry.prefix}:staging:*")) == []
    assert redis_registry.publish(artifacts[2]).version == 3  # the counter moved past it


def test_moves_are_streamed_with_generation(redis_registry: RedisRegistry, artifacts: list[Path]) -> None:
    redis_registry.publish(artifacts[0])
    redis_registry.publish(artifacts[1])
    start = redis_registry.last_event_id()
    redis_registry.promote(MODEL, "production", 1)
    redis_registry.promote(MODEL, "production", 2)
    events = redis_registry.read_events(start, block_ms=100)
    assert [(e["from"], e["to"], e["generation"]) for _, e in events] == [("", "1", "1"), ("1", "2", "2")]
    assert redis_registry.read_events(events[-1][0], block_ms=50) == []


def test_unreachable_redis_is_a_readable_error() -> None:
    reg = RedisRegistry("redis://127.0.0.1:1/0", prefix="qipo-test-nowhere", socket_timeout=0.5)
    assert not reg.ping()
    with pytest.raises(UnavailableError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        reg.models()
