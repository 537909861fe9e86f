"""The exported ONNX sampler equals the torch policy, and the manifest guards the bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import typer
from typer.testing import CliRunner

from service.artifact import ArtifactError, verify_artifact
from training.checkpoint import policy_from_checkpoint
from training.cli import eval_command


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_onnx_matches_torch(tiny_run: Path, tiny_artifact: Path, batch: int) -> None:
    policy, _, _ = policy_from_checkpoint(tiny_run)
    session = ort.InferenceSession(str(tiny_artifact / "policy.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(batch, 3)).astype(np.float32)
    noise = rng.standard_normal((batch, 1)).astype(np.float32)
    (onnx_action,) = session.run(["action"], {"state": state, "noise": noise})
    torch_action = policy.infer(state, noise)
    assert onnx_action.shape == (batch, 1)
    assert np.abs(onnx_action - torch_action).max() <= 1e-5


def test_actions_are_in_bounds(tiny_artifact: Path) -> None:
    session = ort.InferenceSession(str(tiny_artifact / "policy.onnx"), providers=["CPUExecutionProvider"])
    state = np.zeros((64, 3), np.float32)
    noise = (np.random.default_rng(0).standard_normal((64, 1)) * 10).astype(np.float32)  # extreme noise
    (action,) = session.run(["action"], {"state": state, "noise": noise})
    assert np.all(action >= -2.0) and np.all(action <= 2.0)


def test_manifest_records_parity_and_config(tiny_artifact: Path) -> None:
    manifest = verify_artifact(tiny_artifact)
    assert manifest.obs_dim == 3 and manifest.act_dim == 1
    assert manifest.action_low == [-2.0] and manifest.action_high == [2.0]
    assert manifest.export_parity_max_abs_err is not None and manifest.export_parity_max_abs_err <= 1e-5
    assert manifest.training_config["network"]["hidden"] == 32


def tampered(artifact: Path, out: Path) -> Path:
    """A copy of `artifact` whose policy.onnx has one byte changed (same size, other sha256)."""
    shutil.copytree(artifact, out)
    data = bytearray((out / "policy.onnx").read_bytes())
    data[-1] ^= 0xFF
    (out / "policy.onnx").write_bytes(bytes(data))
    return out


def test_tampered_artifact_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="sha256"):
        verify_artifact(tampered(tiny_artifact, tmp_path / "copy"))


def test_qipo_eval_refuses_a_tampered_artifact(tiny_artifact: Path, tmp_path: Path) -> None:
    """`qipo eval ARTIFACT` loads the artifact as the server does (OnnxPolicy: sha256 first), so a changed
    graph is never evaluated."""
    app = typer.Typer()
    app.command()(eval_command)
    copy = tampered(tiny_artifact, tmp_path / "copy")
    result = CliRunner().invoke(app, [str(copy), "--env", "Pendulum-v1", "--episodes", "1", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "sha256" in result.stderr and "tampered" in result.stderr


def test_artifact_evaluates_through_the_policy_contract(tiny_run: Path, tiny_artifact: Path) -> None:
    """The artifact (ONNX, bounds applied) and its run (torch) give the same returns for the same seeds."""
    pytest.importorskip("gymnasium")
    from service.runtime import OnnxPolicy
    from training.eval import evaluate

    policy, _, _ = policy_from_checkpoint(tiny_run)
    onnx = evaluate(OnnxPolicy.load(tiny_artifact), "Pendulum-v1", episodes=2, seed=3, progress=False)
    torch_ = evaluate(policy, "Pendulum-v1", episodes=2, seed=3, progress=False)
    np.testing.assert_allclose(onnx["returns"], torch_["returns"], atol=1e-2)
