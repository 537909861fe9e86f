"""A manifest of another schema version gets one error that says what to do, not a list of field errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.artifact import MANIFEST_NAME, SCHEMA_VERSION, ArtifactError, read_manifest


def test_unknown_schema_version_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 2, "weights": "elsewhere"}))
    with pytest.raises(ArtifactError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert f"schema_version 2; this version of qipo reads schema_version {SCHEMA_VERSION}" in message
    assert "qipo export" in message
    assert "weights" not in message  # the fields of an unknown schema are not listed as errors


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid manifest: not JSON"):
        read_manifest(tmp_path)
