"""The array-only fast path of `/act` decides every body exactly as the wire model + `checked_rows` do.

The fast path may only take a body the slow path accepts, and must then produce the same float32 rows and
fields; everything else it leaves to the slow path, whose 422 names the field, row and reason. Hypothesis
draws bodies from valid and invalid values of every field (JSON-like and msgpack-like).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import codec
from service.act import ActError, _validated, checked_rows, fast_input, states_for

OBS_DIM, MAX_ROWS = 3, 4
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([3.4028234663852886e38, 3.4028236e38, -3.4028235e38, 1e39, True, None, "1.5", "x"]),
)
ROW = st.lists(NUMBERS, min_size=0, max_size=4)


def array_of(rows: list[list[float]], dtype: type) -> np.ndarray:
    """Rows as an ndarray of `dtype`, however the values cast (NaN to int, 1e38 to float16 …)."""
    with np.errstate(all="ignore"):
        return np.asarray(rows, dtype=np.float64).reshape(-1, 3).astype(dtype)


ARRAYS = st.builds(
    array_of,
    st.lists(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=3, max_size=3)),
    st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_]),
)
VALUES = {
    "state": st.one_of(ROW, ARRAYS.map(lambda a: a[0] if len(a) else a), st.none()),
    "states": st.one_of(st.lists(ROW, max_size=6), ARRAYS, st.none(), ROW),
    "seed": st.one_of(st.none(), st.integers(-5, 2**64), st.sampled_from([True, 5.0, "7", 1.5])),
    "deadline_ms": st.one_of(
        st.none(), st.floats(allow_nan=True), st.integers(-5, 2**60), st.sampled_from(["5", 0, True])
    ),
    "robot_id": st.one_of(st.none(), st.text(max_size=130), st.integers(), st.binary(max_size=3)),
    "model": st.one_of(st.none(), st.text(max_size=66), st.sampled_from(["production", "1"])),
    "request_id": st.one_of(st.none(), st.text(max_size=130)),
    "extra": st.integers(),
}
BODIES = st.fixed_dictionaries({}, optional=VALUES)


def slow(obj: Any) -> tuple[Any, ...]:
    """The reference: the wire model, then checked_rows (what every body went through before)."""
    try:
        body = _validated(obj)
        rows = np.array(checked_rows(body, OBS_DIM, MAX_ROWS), dtype=np.float32)
    except ActError as exc:
        return ("refused", exc.status, exc.detail)
    fields = (body.seed, body.deadline_ms, body.robot_id, body.model, body.request_id)
    return ("ok", body.state is not None, rows.tobytes(), rows.shape, fields)


def served(obj: Any) -> tuple[Any, ...]:
    """What `ActService.act` does: the fast path, or the slow one when it declines."""
    inp = fast_input(obj)
    if inp is None or not states_for(inp, OBS_DIM, MAX_ROWS):
        return slow(obj)
    fields = (inp.seed, inp.deadline_ms, inp.robot_id, inp.model, inp.request_id)
    return ("ok", inp.single, inp.rows.tobytes(), inp.rows.shape, fields)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=BODIES)
def test_fast_path_agrees_with_the_wire_model(body: dict[str, Any]) -> None:
    assert served(body) == slow(body)
    # The same body as msgpack decodes it (ndarrays stay ndarrays) is decided the same way too.
    try:
        packed = codec.unpackb(codec.packb(body))
    except (TypeError, ValueError, OverflowError):  # ints beyond 64 bits have no msgpack form
        return
    assert served(packed) == slow(packed)


def test_fast_path_takes_plain_requests_and_declines_the_rest() -> None:
    taken = [
        {"state": [0.1, 0.2, 0.3]},
        {"states": [[1, 2, 3], [4.0, 5.0, 6.0]], "seed": 7, "deadline_ms": 15, "robot_id": "r1"},
        {"state": np.zeros(3, np.float32), "model": "production", "request_id": "x"},
    ]
    for body in taken:
        inp = fast_input(body)
        assert inp is not None and states_for(inp, OBS_DIM, MAX_ROWS)
        assert inp.rows.dtype == np.float32 and inp.rows.shape[1] == OBS_DIM
    declined = [{"state": [1.0, "2", 3.0]}, {"state": [0.1, 0.2, 0.3], "seed": True}, {"state": [0.1, 0.2]}]
    for body in declined:
        inp = fast_input(body)
        assert inp is None or not states_for(inp, OBS_DIM, MAX_ROWS)


def test_slow_path_names_row_and_reason() -> None:
    outcome = served({"states": [[0.0, 1.0, 2.0], [0.0, math.nan, 1.0]]})
    assert outcome[:2] == ("refused", 422)
    assert outcome[2] == [
        {
            "loc": ["body", "states", 1],
            "msg": "states[1] contains NaN or Inf (or overflows float32): nan; send finite numbers",
            "type": "value_error",
        }
    ]
    assert served({"states": [[0.0, 1.0, 2.0], [1.0]]})[2][0]["msg"] == (
        "states[1] has 1 values; this model needs obs_dim=3"
    )
    assert served({"states": [[0.0, 1.0, 2.0]] * 5})[2][0]["msg"] == (
        "5 states is over max_batch_rows=4; split the batch"
    )
