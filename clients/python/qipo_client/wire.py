"""The wire contract of `/act`: the server validates requests with these models and documents its replies
with them, and the clients build and check against the same ones, so the two sides cannot drift.

Annotations use `typing.Optional`/`List`: pydantic evaluates them at run time, and `X | None` does not
evaluate on Python 3.9, which robot stacks still run.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ActRequest(BaseModel):
    """One state (`state`) or a batch (`states`); exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    state: Optional[list[float]] = Field(None, description="One raw observation of obs_dim floats")
    states: Optional[list[list[float]]] = Field(None, description="A batch of raw observations")
    robot_id: Optional[str] = Field(None, max_length=128, description="Caller id; sticky canary assignment")
    seed: Optional[int] = Field(None, ge=0, lt=2**63, description="Seed for the sampler's noise")
    deadline_ms: Optional[float] = Field(None, gt=0, description="Give up (504) if not computed by then")
    model: Optional[str] = Field(None, max_length=64, description="Alias or version to use (default: served)")
    request_id: Optional[str] = Field(None, max_length=128, description="Echoed back in the reply")
    prefix: Optional[list[list[float]]] = Field(
        None,
        description="Chunked models (action_horizon H > 1) with `state`: the previous chunk's remaining "
        "actions [L][A], L ≤ H, index 0 = the action that runs at the step of `state`",
    )
    prefixes: Optional[list[list[list[float]]]] = Field(
        None, description="With `states`: one prefix per state [B][L][A], the same L for the batch"
    )
    committed: Optional[Union[int, list[int]]] = Field(
        None,
        description="d: prefix actions that run before the new chunk starts (0 ≤ d ≤ L, d < H; default 0); "
        "one int, or one per state",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ActRequest:
        if (self.state is None) == (self.states is None):
            raise ValueError("send exactly one of `state` (one observation) or `states` (a batch)")
        if self.states is not None and len(self.states) == 0:
            raise ValueError("`states` is empty: send at least one observation")
        if self.state is not None and self.prefixes is not None:
            raise ValueError("`prefixes` goes with `states`; send `prefix` with a single `state`")
        if self.states is not None and self.prefix is not None:
            raise ValueError("`prefix` goes with `state`; send `prefixes` (one per state) with `states`")
        if self.committed is not None and self.prefix is None and self.prefixes is None:
            raise ValueError("`committed` counts actions of a prefix: send `prefix` (or `prefixes`) with it")
        return self


class Timing(BaseModel):
    """Where a request's time went on the server, in milliseconds."""

    queue_ms: float
    infer_ms: float
    total_ms: float


class ActResponse(BaseModel):
    """A 200 from `/act`: `action` for a `state` request, `actions` for a `states` one; a chunked model
    (action_horizon H > 1) answers `chunk` [H][A] / `chunks` [B][H][A] instead, with its H and period."""

    action: Optional[list[float]] = None
    actions: Optional[list[list[float]]] = None
    chunk: Optional[list[list[float]]] = None
    chunks: Optional[list[list[list[float]]]] = None
    action_horizon: Optional[int] = Field(None, description="H, in chunk replies only")
    control_period_s: Optional[float] = Field(None, description="Seconds per action of a chunk, if recorded")
    model: str
    version: int
    clipped: bool
    timing: Timing
    request_id: Optional[str] = None
