"""The wire contract of `/act` (docs/architecture.md): imports neither fastapi nor onnxruntime, so a robot
controller can depend on it alone."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ActRequest(BaseModel):
    """One state (`state`) or a batch (`states`); exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    state: list[float] | None = Field(None, description="One raw observation of obs_dim floats")
    states: list[list[float]] | None = Field(None, description="A batch of raw observations")
    robot_id: str | None = Field(None, max_length=128, description="Caller id; sticky canary assignment")
    seed: int | None = Field(None, ge=0, lt=2**63, description="Seed for the sampler's noise")
    deadline_ms: float | None = Field(None, gt=0, description="Give up (504) if not computed by then")
    model: str | None = Field(None, max_length=64, description="Alias or version to use (default: served)")
    request_id: str | None = Field(None, max_length=128, description="Echoed back in the reply")

    @model_validator(mode="after")
    def _one_of(self) -> ActRequest:
        if (self.state is None) == (self.states is None):
            raise ValueError("send exactly one of `state` (one observation) or `states` (a batch)")
        if self.states is not None and len(self.states) == 0:
            raise ValueError("`states` is empty: send at least one observation")
        return self


class Timing(BaseModel):
    queue_ms: float
    infer_ms: float
    total_ms: float


class ActResponse(BaseModel):
    action: list[float] | None = None
    actions: list[list[float]] | None = None
    model: str
    version: int
    clipped: bool
    timing: Timing
    request_id: str | None = None
