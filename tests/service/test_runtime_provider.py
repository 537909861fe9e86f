"""`QIPO_ORT_PROVIDER`: which ONNX Runtime provider a replica serves from, chosen explicitly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_cuda_graph_buckets() -> None:
    from service.cuda_graphs import BUCKETS, bucket_for

    assert [bucket_for(n, BUCKETS) for n in (1, 2, 4, 5, 64, 65, 256)] == [1, 4, 4, 16, 64, 256, 256]
    assert bucket_for(257, BUCKETS) is None  # served without a graph


def test_cuda_graph_is_ignored_on_the_cpu(serve_artifact: Path) -> None:
    """`QIPO_ORT_CUDA_GRAPH` only changes CUDA sessions: a CPU replica with it set serves as before."""
    policy = OnnxPolicy.load(serve_artifact, provider="cpu", cuda_graph=True)
    assert policy.graphs is None
    state = np.zeros((3, policy.obs_dim), dtype=np.float32)
    noise = np.zeros((3, policy.noise_dim), dtype=np.float32)
    assert policy.run(state, noise).shape == (3, policy.act_dim)
