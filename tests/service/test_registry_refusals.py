"""What the registry CLI refuses, and what reading it must never do: a dimension change under one model
name, a mistyped Redis URL, reads that create directories; plus `list --json`, alias deletion and the
model `qipo serve` picks when none is named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.registry import Registry, ShapeError
from tests.service.registry_fixtures import MODEL, build_artifact
from tests.service.test_registry_cli import where

runner = CliRunner()


@pytest.fixture(scope="module")
def wide_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same model name as `artifacts`, other dims (obs 5, act 2): a different robot."""
    pytest.importorskip("torch")
    return build_artifact(tmp_path_factory.mktemp("wide"), seed=9, obs_dim=5, act_dim=2)


def test_publish_refuses_a_dimension_change_unless_forced(
    any_registry: Registry, artifacts: list[Path], wide_artifact: Path
) -> None:
    any_registry.publish(artifacts[0])
    with pytest.raises(ShapeError):
        any_registry.publish(wide_artifact)
    result = runner.invoke(app, ["registry", "publish", str(wide_artifact), *where(any_registry)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert (
        f"refusing to publish {MODEL}: version 1 takes obs_dim=3, act_dim=1 and this artifact obs_dim=5, "
        "act_dim=2" in result.output
    )
    assert "--force" in result.output and [mv.version for mv in any_registry.versions(MODEL)] == [1]
    forced = runner.invoke(app, ["registry", "publish", str(wide_artifact), "--force", *where(any_registry)])
    assert forced.exit_code == 0 and "version 2" in forced.output
    any_registry.publish(artifacts[1], force=True)  # and back, knowingly


@pytest.mark.parametrize("url", ["redis:/127.0.0.1:6379", "redis:127.0.0.1:6379/0", "redis//127.0.0.1"])
def test_mistyped_redis_url_is_refused_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["registry", "list"], ["registry", "show", MODEL], ["serve"], ["serve", "--model", "m"]):
        result = runner.invoke(app, [*args, "--registry", url])
        assert result.exit_code == 1 and "looks like a mistyped Redis URL" in result.output, result.output
        assert "redis://host:port/db" in result.output and result.output.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_read_only_commands_create_nothing_and_say_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-registry"
    for args in (
        ["list"],
        ["list", "--json"],
        ["show", MODEL],
        ["pull", MODEL, str(tmp_path / "dest")],
        ["delete-alias", MODEL, "production"],
    ):
        result = runner.invoke(app, ["registry", *args, "--registry", str(missing)])
        assert result.exit_code == 1 and "does not exist" in result.output, (args, result.output)
    assert not missing.exists() and not (tmp_path / "dest").exists()
    missing.mkdir()
    result = runner.invoke(app, ["registry", "list", "--registry", str(missing)])
    assert result.exit_code == 0 and "holds no model" in result.output
    assert list(missing.iterdir()) == []


def test_list_json_and_alias_deletion(any_registry: Registry, artifacts: list[Path]) -> None:
    import json

    any_registry.publish(artifacts[0])
    any_registry.publish(artifacts[1])
    any_registry.promote(MODEL, "production", 1)
    any_registry.promote(MODEL, "staging", 2)
    result = runner.invoke(app, ["registry", "list", "--json", *where(any_registry)])
    rows = json.loads(result.output)
    assert [(r["model"], r["version"], r["aliases"]) for r in rows] == [
        (MODEL, 1, ["production"]),
        (MODEL, 2, ["staging"]),
    ]
    assert rows[0]["obs_dim"] == 3 and rows[0]["act_dim"] == 1

    result = runner.invoke(app, ["registry", "delete-alias", MODEL, "staging", *where(any_registry)])
    assert result.exit_code == 0 and "staging removed (it pointed at version 2)" in result.output
    assert any_registry.aliases(MODEL) == {"production": 1}
    assert any_registry.history(MODEL, "staging")[-1].to_version is None
    again = runner.invoke(app, ["registry", "delete-alias", MODEL, "staging", *where(any_registry)])
    assert again.exit_code == 1 and "has no alias 'staging' (aliases: production)" in again.output
    canary = runner.invoke(app, ["registry", "delete-alias", MODEL, "canary", *where(any_registry)])
    assert canary.exit_code == 1 and "canary abort" in canary.output


def test_serve_without_a_model_name_needs_exactly_one_model(
    tmp_path: Path, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import _only_model
    from service.registry import DirectoryRegistry

    monkeypatch.delenv("QIPO_MODEL_NAME", raising=False)
    root = tmp_path / "registry"
    root.mkdir()
    empty = runner.invoke(app, ["serve", "--registry", str(root)])
    assert empty.exit_code == 1 and "holds no model; publish one with" in empty.output
    reg = DirectoryRegistry(root)
    reg.publish(artifacts[0])
    assert _only_model(str(root), "qipo") == MODEL
    reg.publish(build_artifact(tmp_path / "other", seed=4, name="arm-bc"))
    two = runner.invoke(app, ["serve", "--registry", str(root)])
    assert two.exit_code == 1 and f"holds 2 models (arm-bc, {MODEL}); pass --model NAME" in two.output


def test_serve_artifact_without_a_registry(artifacts: list[Path], tmp_path: Path) -> None:
    """`qipo serve --artifact DIR`: one artifact, no registry to set up, nothing left in the working dir."""
    import os

    import httpx

    from tests.helpers import qipo_server

    repo = Path(__file__).resolve().parents[2]
    env = os.environ | {"PYTHONPATH": str(repo)}
    with qipo_server(["--artifact", str(artifacts[0])], cwd=tmp_path, env=env) as url:
        served = httpx.get(f"{url}/v1/models").json()
        assert served["name"] == MODEL and served["version"] == 1
        body = httpx.post(f"{url}/act", json={"state": [1.0, 0.0, 0.0], "seed": 1}).json()
        assert len(body["action"]) == 1
    assert list(tmp_path.iterdir()) == []
