"""The training Jobs (deploy/k8s/train) hang together: what kubernetes-validate cannot see.

Pod 0 must be reachable at the rendezvous name the pods are given, the node count torchrun waits for must be
the Job's pod count, a GPU pod starts one process per GPU it asks for, and every volume and ConfigMap the
pods read exists in the same kustomization (or, for qipo-settings, in deploy/k8s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "deploy/k8s/train"


def docs(kustomization: Path) -> list[dict[str, Any]]:
    """Every object the kustomization applies (resources may be files or directories)."""
    out: list[dict[str, Any]] = []
    for res in yaml.safe_load((kustomization / "kustomization.yaml").read_text())["resources"]:
        path = kustomization / res
        if path.is_dir():
            out += docs(path)
        else:
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


@pytest.mark.parametrize(("variant", "gpu"), [(TRAIN, False), (TRAIN / "gpu", True)])
def test_the_training_job_reaches_its_rendezvous_and_volumes(variant: Path, gpu: bool) -> None:
    objects = docs(variant)
    (job,) = [d for d in objects if d["kind"] == "Job"]
    (service,) = [d for d in objects if d["kind"] == "Service"]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    host, port = env["QIPO_TRAIN_RDZV"].split(":")
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert int(env["QIPO_TRAIN_NNODES"]) == spec["completions"]
    limits = container["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == gpu
    if gpu:
        assert int(env["QIPO_TRAIN_NPROC"]) == limits["nvidia.com/gpu"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {d["metadata"]["name"] for d in objects if d["kind"] == "PersistentVolumeClaim"}
    maps = {ref["configMapRef"]["name"] for ref in container["envFrom"]}
    base = docs(ROOT / "deploy/k8s")
    assert maps <= {d["metadata"]["name"] for d in objects + base if d["kind"] == "ConfigMap"}
    assert "QIPO_REGISTRY" in next(d for d in base if d["metadata"]["name"] == "qipo-settings")["data"]


def test_the_job_script_resumes_and_publishes() -> None:
    script = (ROOT / "deploy/train-job.sh").read_text()
    assert "--rdzv-backend=c10d" in script and '"$run/checkpoint.pt"' in script
    assert "qipo export" in script and "qipo registry publish" in script
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/train-job.sh /usr/local/bin/qipo-train-job" in dockerfile
