"""A registry in a local directory: the embedded default, needs no server.

Layout: `ROOT/<name>/versions/<n>/{manifest.json, policy.onnx}`, `ROOT/<name>/aliases.json`,
`ROOT/<name>/history.jsonl`, `ROOT/<name>/canary.json`, `ROOT/generation`. A version appears by one
`rename` of a fully written and verified staging directory, so a publish that dies midway leaves nothing
visible. Alias moves take an exclusive `flock` and replace `aliases.json` with `os.replace`, so readers see
the old or the new map.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from service.artifact import ArtifactError, read_manifest, verify_artifact
from service.registry.base import (
    AliasMove,
    ConflictError,
    IntegrityError,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    check_alias,
    check_share,
    utcnow,
)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class DirectoryRegistry(Registry):
    """Created on the first write (publish, alias move): reading a registry never makes a directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def __repr__(self) -> str:
        return f"DirectoryRegistry({str(self.root)!r})"

    def _model_dir(self, name: str) -> Path:
        return self.root / name

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self._model_dir(name).mkdir(parents=True, exist_ok=True)
        with (self._model_dir(name) / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def publish(self, artifact_dir: Path, *, force: bool = False) -> ModelVersion:
        try:
            manifest = verify_artifact(Path(artifact_dir))
        except ArtifactError as exc:
            raise RegistryError(f"refusing to publish: {exc}") from exc
        if not force:
            self.check_shape(manifest)
        versions_dir = self._model_dir(manifest.name) / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self._model_dir(manifest.name) / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for fname in [*manifest.files, "manifest.json"]:
                shutil.copy2(Path(artifact_dir) / fname, staging / fname)
            verify_artifact(staging)
            (staging / "published_at").write_text(utcnow())
            while True:
                version = self._next_version(manifest.name)
                try:
                    os.rename(staging, versions_dir / str(version))  # never onto an existing version
                    break
                except OSError as exc:  # another publisher took this number: take the next
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.get(manifest.name, version)

    def _next_version(self, name: str) -> int:
        existing = [int(p.name) for p in (self._model_dir(name) / "versions").iterdir() if p.name.isdigit()]
        return max(existing, default=0) + 1

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, name: str) -> list[ModelVersion]:
        vdir = self._model_dir(name) / "versions"
        if not vdir.is_dir():
            return []
        numbers = sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit())
        return [self.get(name, n) for n in numbers]

    def get(self, name: str, version: int) -> ModelVersion:
        vdir = self._model_dir(name) / "versions" / str(version)
        if not vdir.is_dir():
            raise NotFoundError(f"model {name!r} has no version {version} in {self.root}")
        published = (vdir / "published_at").read_text() if (vdir / "published_at").exists() else ""
        return ModelVersion(name=name, version=version, manifest=read_manifest(vdir), published_at=published)

    def aliases(self, name: str) -> dict[str, int]:
        path = self._model_dir(name) / "aliases.json"
        if not path.exists():
            return {}
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def set_alias(
        self, name: str, alias: str, version: int | None, *, expected: int | None = None, reason: str = ""
    ) -> AliasMove:
        check_alias(alias)
        with self._lock(name):
            if version is not None:
                self.get(name, version)
            aliases = self.aliases(name)
            current = aliases.get(alias)
            if current != expected:
                raise ConflictError(
                    f"alias {alias!r} of {name!r} points at {current}, not {expected}: someone moved it "
                    "first; re-read with `qipo registry list` and retry"
                )
            if version is None:
                aliases.pop(alias, None)
            else:
                aliases[alias] = version
            move = AliasMove(name=name, alias=alias, from_version=current, to_version=version, reason=reason)
            with (self._model_dir(name) / "history.jsonl").open("a") as fh:
                fh.write(move.model_dump_json() + "\n")
            _write_atomic(self._model_dir(name) / "aliases.json", json.dumps(aliases, sort_keys=True))
            self._bump_generation()
        return move

    def _bump_generation(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".generation.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _write_atomic(self.root / "generation", str(self.generation() + 1))

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        path = self._model_dir(name) / "history.jsonl"
        if not path.exists():
            return []
        moves = [AliasMove.model_validate_json(line) for line in path.read_text().splitlines() if line]
        return [m for m in moves if alias is None or m.alias == alias]

    def pull(self, name: str, version: int, dest: Path) -> Path:
        src = self._model_dir(name) / "versions" / str(version)
        if not src.is_dir():
            raise NotFoundError(f"model {name!r} has no version {version} in {self.root}")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(src)
        for fname in [*manifest.files, "manifest.json"]:
            shutil.copy2(src / fname, dest / fname)
        try:
            verify_artifact(dest)
        except ArtifactError as exc:
            raise IntegrityError(f"{name} version {version} failed verification on pull: {exc}") from exc
        return dest

    def canary_share(self, name: str) -> float:
        path = self._model_dir(name) / "canary.json"
        return float(json.loads(path.read_text())["share"]) if path.exists() else 0.0

    def set_canary_share(self, name: str, share: float) -> None:
        check_share(share)
        with self._lock(name):
            _write_atomic(self._model_dir(name) / "canary.json", json.dumps({"share": share}))
            self._bump_generation()

    def _delete_version(self, name: str, version: int) -> bool:
        vdir = self._model_dir(name) / "versions" / str(version)
        with self._lock(name):  # set_alias holds the same lock, so no alias can move onto it meanwhile
            if version in self.aliases(name).values() or not vdir.is_dir():
                return False
            trash = self._model_dir(name) / f".gc-{version}-{uuid.uuid4().hex}"
            os.rename(vdir, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def generation(self) -> int:
        path = self.root / "generation"
        return int(path.read_text()) if path.exists() else 0
