"""`QIPO_ORT_PROVIDER`: which ONNX Runtime provider a replica serves from, chosen explicitly."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from service.artifact import ArtifactError
from service.runtime import OnnxPolicy, choose_providers


def test_cpu_is_always_the_cpu(serve_artifact: Path) -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    policy = OnnxPolicy.load(serve_artifact, provider="cpu")
    assert policy.session.get_providers() == ["CPUExecutionProvider"]
    assert not policy.io_binding


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ArtifactError, match="unknown ONNX Runtime provider 'tpu'"):
        choose_providers("tpu")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime offers CUDA"
)
def test_cuda_without_cuda_refuses_with_the_next_step(serve_artifact: Path) -> None:
    """A GPU replica must not quietly serve from its CPU: it says what to install instead."""
    with pytest.raises(ArtifactError, match="install the `gpu` extra"):
        OnnxPolicy.load(serve_artifact, provider="cuda")
