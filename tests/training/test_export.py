"""The exported ONNX sampler equals the torch policy, and the manifest guards the bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.artifact import ArtifactError, verify_artifact
from training.qipo import policy_from_checkpoint


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_onnx_matches_torch(tiny_run: Path, tiny_artifact: Path, batch: int) -> None:
    policy, _, _ = policy_from_checkpoint(tiny_run)
    session = ort.InferenceSession(str(tiny_artifact / "policy.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch)
    state = rng.uniform([-1, -1, -8], [1, 1, 8], size=(batch, 3)).astype(np.float32)
    noise = rng.standard_normal((batch, 1)).astype(np.float32)
    (onnx_action,) = session.run(["action"], {"state": state, "noise": noise})
    torch_action = policy.act_numpy(state, noise)
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


def test_tampered_artifact_is_refused(tiny_artifact: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_artifact, copy)
    data = bytearray((copy / "policy.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        verify_artifact(copy)
