"""The wire contract of `/act`: the server validates requests with these models and documents its replies
with them, and the clients build and check against the same ones, so the two sides cannot drift.

Annotations use `typing.Optional`/`List`: pydantic evaluates them at run time, and `X | None` does not
evaluate on Python 3.9, which robot stacks still run.
"""

from __future__ import annotations

from typing import Optional

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

    @model_validator(mode="after")
    def _one_of(self) -> ActRequest:
        if (self.state is None) == (self.states is None):
            raise ValueError("send exactly one of `state` (one observation) or `states` (a batch)")
        if self.states is not None and len(self.states) == 0:
            raise ValueError("`states` is empty: send at least one observation")
        return self


class Timing(BaseModel):
    """Where a request's time went on the server, in milliseconds."""

    queue_ms: float
    infer_ms: float
    total_ms: float


class ActResponse(BaseModel):
    """A 200 from `/act`: `action` for a `state` request, `actions` for a `states` one."""

    action: Optional[list[float]] = None
    actions: Optional[list[list[float]]] = None
    model: str
    version: int
    clipped: bool
    timing: Timing
    request_id: Optional[str] = None
