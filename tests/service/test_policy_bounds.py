"""`Bounds.clamp` and `Bounds.at_bound`: the Python-float path for small outputs and the NumPy path for
big ones give the same actions and flags, and no action leaves the bounds."""

from __future__ import annotations

import numpy as np
import pytest

from service.policy import SMALL_ACTIONS, Bounds


def numpy_way(bounds: Bounds, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: clamp with NumPy, flag rows with a component at a bound."""
    out = np.minimum(np.maximum(raw, bounds.low), bounds.high)
    return out, ((out <= bounds.low) | (out >= bounds.high)).any(axis=1)


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (7, 3), (64, 1), (65, 1), (40, 3), (256, 2)])
def test_small_and_big_paths_agree_with_numpy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    bounds = Bounds(np.linspace(-2.0, -0.5, shape[1]), np.linspace(0.5, 2.0, shape[1]))
    raw = (rng.standard_normal(shape) * 2).astype(np.float32)
    flat = raw.reshape(-1)
    flat[:: max(1, flat.size // 5)] = np.resize(bounds.low, flat[:: max(1, flat.size // 5)].shape)
    raw[-1, 0] = np.nan if raw.size > 2 else raw[-1, 0]
    raw[0, -1] = np.inf
    expected_actions, expected_flags = numpy_way(bounds, raw.copy())
    a = bounds.clamp(raw)
    flags = bounds.at_bound(a)
    assert (raw.size <= SMALL_ACTIONS) == (shape[0] * shape[1] <= SMALL_ACTIONS)
    np.testing.assert_array_equal(a, expected_actions)  # NaN equals NaN here
    np.testing.assert_array_equal(flags, expected_flags)
    assert flags.dtype == np.bool_ and flags.shape == (shape[0],)
    assert (((a >= bounds.low) & (a <= bounds.high)) | np.isnan(a)).all()


def test_bounds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="below"):
        Bounds(np.array([1.0]), np.array([1.0]))
