"""`qipo registry …` against both backends, and the canary split it controls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.canary import bucket, routes_to_canary
from service.cli import app
from service.registry import DirectoryRegistry, Registry
from service.registry.redis_registry import RedisRegistry
from tests.service.registry_fixtures import MODEL

runner = CliRunner()


def where(reg: Registry) -> list[str]:
    if isinstance(reg, RedisRegistry):
        return ["--registry", reg.url, "--prefix", reg.prefix]
    assert isinstance(reg, DirectoryRegistry)
    return ["--registry", str(reg.root)]


def qipo(reg: Registry, *args: str) -> str:
    result = runner.invoke(app, ["registry", *args, *where(reg)])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_lifecycle(any_registry: Registry, artifacts: list[Path], tmp_path: Path) -> None:
    assert "version 1" in qipo(any_registry, "publish", str(artifacts[0]), "--alias", "production")
    qipo(any_registry, "publish", str(artifacts[1]))
    qipo(any_registry, "publish", str(artifacts[2]))
    assert "1 -> 2" in qipo(any_registry, "promote", MODEL, "2")
    assert "2 -> 1" in qipo(any_registry, "rollback", MODEL)
    assert json.loads(qipo(any_registry, "show", MODEL, "--ref", "2"))["manifest"]["training_config"] == {
        "seed": 2
    }
    assert "version 1" in qipo(any_registry, "pull", MODEL, str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "policy.onnx").exists()

    assert "for 20% of robots" in qipo(any_registry, "canary", "start", MODEL, "3", "--share", "0.2")
    assert any_registry.aliases(MODEL) == {"production": 1, "canary": 3}
    assert any_registry.canary_share(MODEL) == 0.2
    assert "1 -> 3" in qipo(any_registry, "canary", "promote", MODEL)
    assert any_registry.aliases(MODEL) == {"production": 3} and any_registry.canary_share(MODEL) == 0.0
    qipo(any_registry, "canary", "start", MODEL, "2", "--share", "0.5")
    assert "aborted" in qipo(any_registry, "canary", "abort", MODEL)
    assert any_registry.aliases(MODEL) == {"production": 3}

    listing = qipo(any_registry, "list")
    assert MODEL in listing and "production" in listing
    assert "would remove versions [1, 2]" in qipo(any_registry, "gc", MODEL, "--older-than", "0", "--dry-run")
    assert "removed versions [1, 2]" in qipo(any_registry, "gc", MODEL, "--older-than", "0")
    assert [mv.version for mv in any_registry.versions(MODEL)] == [3]

    missing = runner.invoke(app, ["registry", "promote", MODEL, "7", *where(any_registry)])
    assert (
        missing.exit_code == 1 and missing.output.startswith("error: ") and "no version 7" in missing.output
    )


def test_cli_unreachable_redis_is_one_line() -> None:
    result = runner.invoke(app, ["registry", "list", "--registry", "redis://127.0.0.1:1/0", "--prefix", "x"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "cannot reach Redis" in result.output


def test_canary_assignment_is_stable_and_proportional() -> None:
    robots = [f"robot-{i}" for i in range(4000)]
    share = sum(routes_to_canary(r, 0.25, MODEL, 3) for r in robots) / len(robots)
    assert 0.22 < share < 0.28
    assert bucket("robot-7", "m:3") == bucket("robot-7", "m:3")  # a pure function of id and canary
    assert all(not routes_to_canary(r, 0.0, MODEL, 3) for r in robots[:100])
    assert not routes_to_canary(None, 1.0, MODEL, 3)  # anonymous traffic never goes to a canary
    # a new canary version draws a fresh subset (the same robots are not always the guinea pigs)
    first = {r for r in robots if routes_to_canary(r, 0.25, MODEL, 3)}
    second = {r for r in robots if routes_to_canary(r, 0.25, MODEL, 4)}
    assert 0.15 < len(first & second) / len(first) < 0.35


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_canary_share_out_of_range(any_registry: Registry, artifacts: list[Path], share: str) -> None:
    any_registry.publish(artifacts[0])
    any_registry.publish(artifacts[1])
    any_registry.promote(MODEL, "production", 1)
    result = runner.invoke(
        app, ["registry", "canary", "start", MODEL, "2", "--share", share, *where(any_registry)]
    )
    assert result.exit_code == 1 and "between 0 and 1" in result.output
    assert any_registry.aliases(MODEL) == {"production": 1}  # refused before anything moved
