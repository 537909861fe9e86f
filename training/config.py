"""Every knob of a QIPO run in one serialisable object (docs/architecture.md), kept in checkpoints/manifests.

The paper leaves step counts, renewal period, β, optimiser and solver open; the defaults here are the
choices described there (they beat BC clearly on Pendulum `mixed`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.paths import DEFAULT_STEPS, SOLVERS, default_solver, path_name

SolverKind = Literal["euler", "midpoint", "dpm-solver-2", "ddim"]


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(default=128, ge=8, description="Velocity-net width (residual blocks expand 2×)")
    blocks: int = Field(default=2, ge=0)
    time_dim: int = Field(default=32, ge=2)
    critic_hidden: int = Field(default=256, ge=8)
    critic_layers: int = Field(default=2, ge=1, description="Hidden layers per Q head (QGPO: 2)")


class QIPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algo: Literal["qipo", "bc"] = Field(default="qipo", description="bc stops after the behaviour warm-up")
    variant: Literal["qipo-ot", "qipo-diff"] = "qipo-ot"
    seed: int = 0
    # Step budgets: K1 behaviour warm-up, K2 critic, K3 policy improvement.
    behavior_steps: int = Field(default=10_000, ge=0)
    critic_steps: int = Field(default=10_000, ge=0)
    improve_steps: int = Field(default=6_000, ge=0)
    # Policy improvement.
    beta: float = Field(
        default=3.0, ge=0, description="Inverse temperature of softmax(β·Q) over a support set"
    )
    support_size: int = Field(
        default=16, ge=1, description="M policy samples per state (+ the dataset action)"
    )
    renew_every: int = Field(
        default=2_000, ge=1, description="K_renew: rebuild every support set after this many steps"
    )
    improve_loss: Literal["full", "resample"] = Field(
        default="full",
        description="full: Σ_j g_ij‖·‖² over all M+1 support actions of improve_batch_size states; resample: "
        "one support action per state drawn with probability g_ij (same expected loss, M+1× cheaper), "
        "batch_size states per step",
    )
    # Critic (QGPO in-support softmax Q-learning).
    critic_kind: Literal["softmax-q", "iql"] = "softmax-q"
    beta_q: float = Field(default=1.0, ge=0)
    expectile: float = Field(default=0.7, gt=0, lt=1, description="IQL only: expectile τ of the V regression")
    critic_support: int = Field(
        default=16, ge=1, description="Behaviour samples at each s' for the softmax target"
    )
    gamma: float = Field(default=0.99, gt=0, le=1)
    tau: float = Field(default=0.005, gt=0, le=1)
    critic_lr: float = Field(default=3e-4, gt=0)
    reward_scale: float | Literal["auto"] = Field(
        default=0.1, description="Multiply rewards; 'auto' = 1000/(max_return − min_return) as for locomotion"
    )
    # Optimisation.
    lr: float = Field(default=3e-4, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    batch_size: int = Field(default=256, ge=1, description="Transitions per behaviour / critic step")
    improve_batch_size: int = Field(
        default=64, ge=1, description="States per improvement step (each with M+1 actions)"
    )
    grad_clip: float | None = Field(default=10.0, gt=0)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    # Sampling.
    solver: SolverKind | None = Field(
        default=None,
        description="None: the variant's default (euler for qipo-ot, dpm-solver-2 for qipo-diff)",
    )
    solver_steps: int | None = Field(
        default=None, ge=1, description="None: the solver's default (10 Euler, 8 DPM-2)"
    )
    action_selection: Literal["sample", "best-of-n"] = "sample"
    best_of_n: int = Field(
        default=16, ge=1, description="Candidates per state for best-of-n (noise input [B, N·A])"
    )
    # Bookkeeping.
    log_every: int = Field(default=100, ge=1)
    sample_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Precision of the no-grad policy sampling for support sets and critic targets (Q "
        "weights stay float32). bfloat16 runs ~2.7× faster on CPUs with AVX512-BF16/AMX and moves unit-box "
        "samples by ~1e-3; auto picks it only on such CPUs",
    )
    sample_batch: int = Field(
        default=8192, ge=1, description="States per no-grad pass when building support sets"
    )

    @model_validator(mode="after")
    def _resolve_solver(self) -> QIPOConfig:
        """Fill the solver and its steps from the variant, so a stored config names what was run."""
        if self.solver is None:
            self.solver = default_solver(self.variant)  # type: ignore[assignment]
        allowed = SOLVERS[path_name(self.variant)]
        if self.solver not in allowed:
            raise ValueError(
                f"solver {self.solver!r} does not fit variant {self.variant}; choose one of {allowed}"
            )
        if self.solver_steps is None:
            self.solver_steps = DEFAULT_STEPS[self.solver]
        if self.algo == "bc" and self.action_selection == "best-of-n":
            raise ValueError("best-of-n ranks candidates by the critic, and algo bc trains none; use sample")
        return self

    @property
    def steps(self) -> int:
        assert self.solver_steps is not None  # filled by the validator
        return self.solver_steps

    @property
    def solver_kind(self) -> str:
        assert self.solver is not None
        return self.solver

    @property
    def noise_candidates(self) -> int:
        """Noise rows per state the exported policy takes: N for best-of-n, else 1."""
        return self.best_of_n if self.action_selection == "best-of-n" else 1
