"""DirectoryRegistry: immutable versions, atomic aliases with compare-and-set, history, verified pulls."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.registry import ConflictError, DirectoryRegistry, NotFoundError, RegistryError


def test_publish_numbers_versions_and_pull_verifies(
    tiny_artifact: Path, directory_registry: Path, tmp_path: Path
) -> None:
    reg = DirectoryRegistry(directory_registry)
    v1, v2 = reg.publish(tiny_artifact), reg.publish(tiny_artifact)
    assert (v1.version, v2.version) == (1, 2)
    assert reg.models() == ["pendulum-qipo"]
    assert [v.version for v in reg.versions("pendulum-qipo")] == [1, 2]
    out = reg.pull("pendulum-qipo", 2, tmp_path / "pulled")
    assert (out / "policy.onnx").read_bytes() == (tiny_artifact / "policy.onnx").read_bytes()
    assert not list((directory_registry / "pendulum-qipo").glob(".staging-*"))


def test_aliases_move_atomically_with_history_and_rollback(
    tiny_artifact: Path, directory_registry: Path
) -> None:
    reg = DirectoryRegistry(directory_registry)
    reg.publish(tiny_artifact)
    reg.publish(tiny_artifact)
    g0 = reg.generation()
    reg.promote("pendulum-qipo", "production", 1)
    reg.promote("pendulum-qipo", "production", "2")
    assert reg.resolve("pendulum-qipo", "production") == 2
    assert reg.generation() == g0 + 2
    back = reg.rollback("pendulum-qipo", "production")
    assert (back.from_version, back.to_version) == (2, 1)
    assert [(m.from_version, m.to_version) for m in reg.history("pendulum-qipo", "production")] == [
        (None, 1),
        (1, 2),
        (2, 1),
    ]


def test_stale_compare_and_set_loses(tiny_artifact: Path, directory_registry: Path) -> None:
    reg = DirectoryRegistry(directory_registry)
    reg.publish(tiny_artifact)
    reg.publish(tiny_artifact)
    reg.set_alias("pendulum-qipo", "production", 1, expected=None)
    with pytest.raises(ConflictError, match="someone moved it first"):
        reg.set_alias("pendulum-qipo", "production", 2, expected=None)
    assert reg.resolve("pendulum-qipo", "production") == 1


def test_bad_references_are_explained(tiny_artifact: Path, directory_registry: Path, tmp_path: Path) -> None:
    reg = DirectoryRegistry(directory_registry)
    reg.publish(tiny_artifact)
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        reg.resolve("pendulum-qipo", "production")
    with pytest.raises(NotFoundError, match="no version 9"):
        reg.promote("pendulum-qipo", "production", 9)
    with pytest.raises(RegistryError, match="alias '1bad' is invalid"):
        reg.set_alias("pendulum-qipo", "1bad", 1)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "policy.onnx").write_bytes(b"not onnx")
    with pytest.raises(RegistryError, match="refusing to publish"):
        reg.publish(broken)
    assert [v.version for v in reg.versions("pendulum-qipo")] == [1]
