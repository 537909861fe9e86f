"""One loader for Minari datasets (by directory or by id from the local Minari cache), D4RL-style HDF5 and
`.npz` files, each returning the typed `TransitionDataset` (training/data/transitions.py).

The dataset contract (docs/training.md#datasets): the env id comes from `--env`, else the file (HDF5 attribute
`env_id`, `env` or `env_name`; Minari's env spec; the `.npz` `meta` JSON); action bounds are the ones the
file declares, else the env's action space, else the data's min/max with a warning, because they become the
exported policy's clipping range.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from training.data.minari_io import load_minari, load_minari_id
from training.data.transitions import (
    BOUNDS_DECLARED,
    BOUNDS_INFERRED,
    BoundsInferredWarning,
    DatasetError,
    TransitionDataset,
    from_arrays,
)

__all__ = [
    "BOUNDS_DECLARED",
    "BOUNDS_INFERRED",
    "BoundsInferredWarning",
    "DatasetError",
    "TransitionDataset",
    "load_dataset",
    "save_npz",
]

ENV_ATTRS = ("env_id", "env", "env_name")  # where D4RL-style files and our npz `meta` name the env
# A Minari dataset id: `namespace/name-vN` (e.g. `mujoco/hopper/medium-v0`), resolved in the local cache.
MINARI_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+$")


def load_dataset(path: Path | str, env_id: str | None = None) -> TransitionDataset:
    """Load a dataset by what `path` is: a Minari dataset directory, a Minari id in the local Minari cache
    (`mujoco/hopper/medium-v0`), a D4RL-style `.hdf5`/`.h5`, or an `.npz`. `env_id` overrides the env id the
    file records (and supplies undeclared action bounds from the env's action space)."""
    text = str(path)
    path = Path(path)
    if path.is_dir():
        return load_minari(path, env_id)
    if not path.exists():
        if path.suffix not in (".hdf5", ".h5", ".npz") and MINARI_ID.match(text):
            return load_minari_id(text, env_id)
        raise DatasetError(
            f"{path} does not exist; pass an existing .hdf5/.h5/.npz file, a Minari dataset directory or the "
            "id of a Minari dataset in the local cache, or make one with `qipo data make`"
        )
    if path.suffix in (".hdf5", ".h5"):
        arrays, meta, env_source = _read_hdf5(path)
    elif path.suffix == ".npz":
        arrays, meta, env_source = _read_npz(path)
    else:
        raise DatasetError(f"{path}: unknown format; use a Minari directory or id, .hdf5/.h5 or .npz")
    found = next((str(meta[k]) for k in ENV_ATTRS if meta.get(k)), None)
    if env_id:
        found, env_source = env_id, "--env"
    return from_arrays(
        arrays,
        action_low=arrays.get("action_low"),
        action_high=arrays.get("action_high"),
        name=str(meta.get("name") or path.stem),
        env_id=found,
        env_source=env_source if found else None,
        ref_scores=meta.get("ref_scores"),
        source=str(path),
    )


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    try:
        meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    except ValueError as exc:
        raise DatasetError(f"{path}: key 'meta' is not a JSON object ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f'{path}: key \'meta\' must hold a JSON object, e.g. {{"env_id": "Reacher-v5"}}')
    key = next((k for k in ENV_ATTRS if meta.get(k)), None)
    return arrays, meta, f"npz meta {key!r}"


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            arrays = {k: fh[k][()] for k in fh if isinstance(fh[k], h5py.Dataset)}
            attrs = {k: _attr(v) for k, v in fh.attrs.items()}
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from exc
    for key in ("action_low", "action_high"):  # bounds may also be declared as file attributes
        if key not in arrays and key in attrs:
            arrays[key] = np.asarray(attrs[key], dtype=np.float32).reshape(-1)
    env_key = next((k for k in ENV_ATTRS if attrs.get(k)), None)
    return arrays, attrs, f"HDF5 attribute {env_key!r}"


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    return value


def save_npz(dataset: TransitionDataset, path: Path) -> Path:
    meta = json.dumps({"name": dataset.name, "env_id": dataset.env_id, "ref_scores": dataset.ref_scores})
    np.savez_compressed(path, meta=np.array(meta), **dataset.to_arrays())  # type: ignore[arg-type]
    return path
