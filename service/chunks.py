"""The inpainting fields of an `/act` request (`prefix` / `prefixes`, `committed`) checked against the model
that answers it, and turned into the chunked graph's inputs.

One check serves both request paths (the fast one hands over what the body held, msgpack ndarrays
included; the slow one what `ActRequest` validated), so a body gets the same answer on either. Every
refusal is a `PrefixError` naming the field and what to send instead; `/act` answers it as a 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.policy import PolicyMetadata

F32_MAX = 3.4028234663852886e38


class PrefixError(ValueError):
    """An inpainting field this model cannot take: `field` and a message that says what to fix."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg


@dataclass(frozen=True, slots=True)
class PrefixInputs:
    """The chunked graph's inpainting inputs for n rows: prefix [n, H, A] zero-padded past each row's L,
    committed d [n] and prefix_len L [n], all float32 (the graph's binding)."""

    prefix: np.ndarray
    committed: np.ndarray
    prefix_len: np.ndarray


def prefix_inputs(
    raw: Any, committed: Any, single: bool, rows: int, meta: PolicyMetadata
) -> PrefixInputs | None:
    """The request's prefix as graph inputs, None when it sends none; PrefixError when it cannot be used.

    `raw` is `prefix` [L][A] for a `state` request or `prefixes` [B][L][A] for a `states` one (lists or an
    ndarray); `committed` an int or one per row (None: 0).
    """
    field = "prefix" if single else "prefixes"
    if raw is None:
        if committed is not None:
            raise PrefixError("committed", f"`committed` counts actions of a prefix: send `{field}` with it")
        return None
    horizon, act_dim = meta.action_horizon, meta.act_dim
    if horizon == 1:
        raise PrefixError(
            field,
            "this model answers one action per state (action_horizon 1) and takes no prefix; drop "
            f"`{field}` and `committed`",
        )
    arr = _array(raw, field, single, rows, act_dim)
    length = arr.shape[1]
    if length > horizon:
        raise PrefixError(
            field,
            f"{field} holds {length} actions per state; this model's action_horizon is {horizon}: send at "
            "most that many (what is left of the previous chunk)",
        )
    _check_values(arr, field, meta)
    d = _committed(committed, rows, length, horizon)
    padded = np.zeros((rows, horizon, act_dim), dtype=np.float32)
    padded[:, :length] = arr
    return PrefixInputs(padded, d, np.full(rows, length, dtype=np.float32))


def _array(raw: Any, field: str, single: bool, rows: int, act_dim: int) -> np.ndarray:
    """The prefix as float64 [rows, L, A]; the shape's refusals."""
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise PrefixError(
            field,
            f"{field} is not a rectangular array of numbers: every action needs act_dim={act_dim} values",
        ) from None
    if single:
        if arr.size == 0:  # `[]`: no actions left
            arr = arr.reshape(0, act_dim)
        arr = arr[None]
    elif arr.ndim == 2 and arr.shape[1] == 0:  # `[[], [], ...]`
        arr = arr.reshape(arr.shape[0], 0, act_dim)
    want = "[L][A]" if single else "[B][L][A]"
    if arr.ndim != 3:
        raise PrefixError(field, f"{field} must be {want} (actions of act_dim={act_dim} values)")
    if arr.shape[0] != rows:
        raise PrefixError(field, f"{field} has {arr.shape[0]} prefixes for {rows} states; send one per state")
    if arr.shape[2] != act_dim:
        raise PrefixError(
            field, f"{field} actions have {arr.shape[2]} values; this model needs act_dim={act_dim}"
        )
    return arr


def _check_values(arr: np.ndarray, field: str, meta: PolicyMetadata) -> None:
    """Finite, float32-representable and inside the model's action bounds (compared in float32, as the
    actions the server sent are)."""
    if arr.size == 0:
        return
    if not (arr.max() <= F32_MAX and arr.min() >= -F32_MAX):  # False for NaN too
        raise PrefixError(field, f"{field} contains NaN or Inf (or overflows float32); send finite actions")
    values = arr.astype(np.float32)
    low = np.asarray(meta.action_low, dtype=np.float32)
    high = np.asarray(meta.action_high, dtype=np.float32)
    outside = (values < low) | (values > high)
    if outside.any():
        row, step, dim = (int(i) for i in np.argwhere(outside)[0])
        where = f"{field}[{step}]" if field == "prefix" else f"{field}[{row}][{step}]"
        raise PrefixError(
            field,
            f"{where}[{dim}] = {float(values[row, step, dim])!r} is outside the action bounds "
            f"[{float(low[dim])!r}, {float(high[dim])!r}]; send the actions the previous chunk held",
        )


def _committed(committed: Any, rows: int, length: int, horizon: int) -> np.ndarray:
    """d per row as float32 [rows]: whole numbers with 0 ≤ d ≤ L and d < H."""
    if committed is None:
        return np.zeros(rows, dtype=np.float32)
    values = np.asarray(committed)
    if values.ndim == 1 and len(values) != rows:
        raise PrefixError(
            "committed",
            f"committed has {len(values)} values for {rows} states; send one int or one per state",
        )
    if values.ndim > 1 or values.dtype.kind not in "iu":
        raise PrefixError("committed", "committed must be a whole number or a list of them, one per state")
    d = np.broadcast_to(values, (rows,))
    if (d < 0).any():
        raise PrefixError("committed", "committed must be ≥ 0 (actions of the prefix that still run)")
    if (d > length).any():
        raise PrefixError(
            "committed",
            f"committed {int(d.max())} is more than the prefix's {length} actions; send at most L",
        )
    if (d >= horizon).any():
        raise PrefixError(
            "committed",
            f"committed {int(d.max())} must be below the action horizon {horizon}: the new chunk needs at "
            "least one action of its own",
        )
    return d.astype(np.float32)
