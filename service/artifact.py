"""The artifact contract (docs/architecture.md, "Artifact"): one manifest definition for exporter and server.

An artifact is a directory holding `policy.onnx` (the fused K-step sampler) and `manifest.json`. Loading
verifies every file's sha256 before anything can serve; no pickle is ever read.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1
MANIFEST_NAME = "manifest.json"
POLICY_FILE = "policy.onnx"


class ArtifactError(RuntimeError):
    """An artifact is missing, malformed or does not match its manifest."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class SolverSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["euler", "midpoint", "dpm-solver-2", "ddim"] = "euler"
    steps: int = Field(ge=1, le=1000)


class Manifest(BaseModel):
    """Everything a server or a person needs to trust and run a policy without the training code."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # The gymnasium env the policy was trained for (None: not recorded); `qipo eval` uses it by default.
    env_id: str | None = None
    obs_dim: int = Field(ge=1)
    act_dim: int = Field(ge=1)
    action_low: list[float]
    action_high: list[float]
    variant: Literal["qipo-ot", "qipo-diff", "bc"] = "qipo-ot"
    solver: SolverSpec
    # Width of the `noise` input when it is not act_dim: best-of-N exports take N noises per state,
    # noise [B, N·act_dim] (candidate-major within a row). None means act_dim·action_horizon.
    noise_dim: int | None = Field(default=None, ge=1)
    # Action chunks: H actions per call, `action` [B, H, A] for H > 1, executed one per control period (the
    # env's dt when known). Manifests from before chunks have neither field: H = 1.
    action_horizon: int = Field(default=1, ge=1)
    control_period_s: float | None = Field(default=None, gt=0)
    # How a chunked graph uses its `prefix` inputs (docs/architecture.md, "Action chunks"); None for H = 1.
    inpainting: Literal["replace", "soft"] | None = None
    opset: int
    files: dict[str, FileEntry]
    dataset: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, Any] = Field(default_factory=dict)
    export_parity_max_abs_err: float | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    git_commit: str | None = None

    @property
    def noise_width(self) -> int:
        return self.noise_dim or self.act_dim * self.action_horizon

    @model_validator(mode="after")
    def _check_bounds(self) -> Manifest:
        if len(self.action_low) != self.act_dim or len(self.action_high) != self.act_dim:
            raise ValueError(f"action_low/high must have act_dim={self.act_dim} entries")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high, strict=True)):
            raise ValueError("every action_low must be below its action_high")
        if POLICY_FILE not in self.files:
            raise ValueError(f"files must list {POLICY_FILE}")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), size=path.stat().st_size)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path} not found: an artifact directory needs a manifest (run `qipo export`)")
    try:
        raw = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ArtifactError(f"{path} is not a valid manifest: not JSON ({exc})") from exc
    # Checked before the fields: another schema's fields would otherwise read as a list of unrelated errors.
    version = raw.get("schema_version", SCHEMA_VERSION) if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has manifest schema_version {version!r}; this version of qipo reads schema_version "
            f"{SCHEMA_VERSION} only: export the policy again with this version (`qipo export`)"
        )
    try:
        return Manifest.model_validate(raw)
    except ValueError as exc:
        raise ArtifactError(f"{path} is not a valid manifest: {exc}") from exc


def verify_artifact(directory: Path) -> Manifest:
    """Read the manifest and check every listed file's size and sha256; raise ArtifactError on mismatch."""
    manifest = read_manifest(directory)
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"artifact file {path} is missing; re-export or re-pull the version")
        size = path.stat().st_size
        if size != entry.size:
            raise ArtifactError(f"{path} has {size} bytes, manifest says {entry.size}: artifact corrupted")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ArtifactError(
                f"{path} sha256 {digest[:12]}… does not match manifest {entry.sha256[:12]}…: artifact "
                "corrupted or tampered with; re-pull it from the registry"
            )
    return manifest
