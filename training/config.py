"""Every knob of a QIPO run in one serialisable object (DESIGN §4.2), stored in checkpoints and manifests.

The paper leaves step counts, renewal period, β, optimiser and solver open; the defaults here are the
choices recorded in DESIGN §4.2 and §4.3 (they beat BC clearly on Pendulum `mixed`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(256, ge=8)
    blocks: int = Field(2, ge=0)
    time_dim: int = Field(32, ge=2)
    critic_hidden: int = Field(256, ge=8)
    critic_layers: int = Field(3, ge=1)


class QIPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algo: Literal["qipo", "bc"] = Field("qipo", description="bc stops after the behaviour warm-up")
    variant: Literal["qipo-ot", "qipo-diff"] = "qipo-ot"
    seed: int = 0
    # Step budgets: K1 behaviour warm-up, K2 critic, K3 policy improvement.
    behavior_steps: int = Field(10_000, ge=0)
    critic_steps: int = Field(10_000, ge=0)
    improve_steps: int = Field(6_000, ge=0)
    # Policy improvement.
    beta: float = Field(3.0, ge=0, description="Inverse temperature of softmax(β·Q) over a support set")
    support_size: int = Field(16, ge=1, description="M policy samples per state (+ the dataset action)")
    renew_every: int = Field(
        2_000, ge=1, description="K_renew: rebuild every support set after this many steps"
    )
    # Critic (QGPO in-support softmax Q-learning).
    critic_kind: Literal["softmax-q", "iql"] = "softmax-q"
    beta_q: float = Field(1.0, ge=0)
    critic_support: int = Field(16, ge=1, description="Behaviour samples at each s' for the softmax target")
    gamma: float = Field(0.99, gt=0, le=1)
    tau: float = Field(0.005, gt=0, le=1)
    critic_lr: float = Field(3e-4, gt=0)
    reward_scale: float | Literal["auto"] = Field(
        0.1, description="Multiply rewards; 'auto' = 1000/(max_return − min_return) as for locomotion"
    )
    # Optimisation.
    lr: float = Field(3e-4, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    batch_size: int = Field(256, ge=1, description="Transitions per behaviour / critic step")
    improve_batch_size: int = Field(
        64, ge=1, description="States per improvement step (each with M+1 actions)"
    )
    grad_clip: float | None = Field(10.0, gt=0)
    network: NetworkConfig = NetworkConfig()
    # Sampling.
    solver: Literal["euler"] = "euler"
    solver_steps: int = Field(10, ge=1)
    action_selection: Literal["sample", "best-of-n"] = "sample"
    best_of_n: int = Field(16, ge=1)
    # Bookkeeping.
    log_every: int = Field(100, ge=1)
    sample_batch: int = Field(8192, ge=1, description="States per no-grad pass when building support sets")
