"""Every knob of a QIPO run in one serialisable object, stored in checkpoints and manifests.

The paper leaves step counts, renewal period, β, optimiser and solver open. The defaults are one setting
chosen for offline locomotion data on a CPU budget (docs/bench/rl.md): IQL's expectile critic with QGPO's
3×256 twin Q (3.6× cheaper per step than the softmax-Q target over 16 behaviour samples, measured, and no
pass of behaviour sampling), rewards scaled by the dataset's return spread, a scale-free temperature that
aims at the same weight sharpness on every dataset, a critic trained three times as long as the
behaviour model (its fit decides everything after it), four lazy renewals, and one policy sample per state
drawn from half-scale source noise at act time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.paths import DEFAULT_STEPS, SOLVERS, default_solver, path_name
from training.temperature import TemperatureMode

SolverKind = Literal["euler", "midpoint", "dpm-solver-2", "ddim"]


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(default=128, ge=8, description="Velocity-net width (residual blocks expand 2×)")
    blocks: int = Field(default=2, ge=0)
    time_dim: int = Field(default=32, ge=2)
    critic_hidden: int = Field(default=256, ge=8)
    critic_layers: int = Field(default=3, ge=1, description="Hidden layers per Q head (QGPO: 3 of 256)")


class QIPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algo: Literal["qipo", "bc"] = Field(default="qipo", description="bc stops after the behaviour warm-up")
    variant: Literal["qipo-ot", "qipo-diff"] = "qipo-ot"
    seed: int = 0
    # Step budgets: K1 behaviour warm-up, K2 critic, K3 policy improvement.
    behavior_steps: int = Field(default=10_000, ge=0)
    critic_steps: int = Field(
        default=30_000,
        ge=0,
        description="K2. On Hopper medium 10k IQL steps left Q at 0.39 correlation with held-out returns and "
        "QIPO fell below its BC (829 → 485); 30k reach 0.93 and QIPO rises above it (docs/bench/rl-probes)",
    )
    improve_steps: int = Field(default=4_000, ge=0)
    action_horizon: int = Field(
        default=1,
        ge=1,
        description="H: the policy emits a chunk of H actions, executed open-loop. The flow "
        "models H·A dimensions, the critic Q(s_t, a_{t:t+H}) backs up the H-step discounted reward sum and "
        "γ^H·V(s_{t+H}); windows never cross an episode end (training.chunks). 1: one action per state",
    )
    # Policy improvement.
    beta: float = Field(
        default=3.0, ge=0, description="Inverse temperature of softmax(β·Q) over a support set"
    )
    support_size: int = Field(
        default=16, ge=1, description="M policy samples per state (+ the dataset action)"
    )
    renew_every: int = Field(
        default=1_000, ge=1, description="K_renew: rebuild every support set after this many steps"
    )
    renewal: Literal["lazy", "eager"] = Field(
        default="lazy",
        description="lazy: draw a state's support set from the policy frozen at the renewal the first time "
        "a batch needs it; eager: draw all at the renewal (Algorithm 2). Both build the same sets",
    )
    temperature: TemperatureMode = Field(
        default="ess",
        description="raw: softmax(β·Q) (the paper); spread: softmax(β·Q/σ̂), σ̂ the mean std of Q over a "
        "support set; ess: β per renewal so that the mean ESS of the weights is target_ess·(M+1)",
    )
    target_ess: float = Field(
        default=0.5, gt=0, lt=1, description="ess mode: target effective sample size / (M+1)"
    )
    data_anchor: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="Weight moved onto each state's dataset action: g' = (1−λ)·g + λ·e_data, so the target"
        " is the mixture (1−λ)·π_l·exp(βQ)/Z + λ·μ. A trust region that keeps the policy on the data's "
        "support when the critic extrapolates on the policy's own samples. Hopper seed 0, BC → λ 0 / 0.5: "
        "medium 829 → 1623 / 929, medium-expert 1727 → 735 / 1951 (docs/bench/rl-probes)",
    )
    anchor_gate: Literal["always", "advantage", "rank", "trust"] = Field(
        default="always",
        description="always: every state's dataset action keeps λ; advantage: only states whose dataset "
        "action the critic rates at least the mean of the policy's samples (Q(s,a) ≥ mean_j Q(s,a_j)), so "
        "poor behaviour actions (replay data) are not held onto while good ones still are. Measured (Hopper "
        "seed 0, docs/bench/rl-probes): no gain on medium-replay, and medium-expert collapses to 949 as with "
        "λ = 0, so `always` stays the default; rank: the dataset action's weight is raised by up to λ but "
        "never above a policy sample the critic rates higher (the anchor follows its Q-rank; weights stay "
        "monotone in Q); trust: λ at each renewal scaled by how well the critic ranks actions within "
        "held-out states, λ·(1 − clip(adv_mc_corr / trust_corr, 0, 1)), so the anchor holds where the "
        "critic's ranking is unvalidated and lets go where held-out returns confirm it",
    )
    trust_corr: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="trust gate: the held-out within-state correlation (adv_mc_corr) at which the anchor is "
        "fully released",
    )
    support_ascent: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Move each policy sample of a support set up the critic before weighting: a + δ·∇ₐQ / "
        "mean‖∇ₐQ‖ over the batch (unit action box, clipped), δ this value. 0: the paper's support sets "
        "(the policy can only reweight what it samples); > 0 lets it leave the data's support along ∇Q, as "
        "TD3+BC does, by about δ per renewal",
    )
    probe_states: int = Field(
        default=2048, ge=1, description="States whose support sets fix each renewal's temperature and stats"
    )
    holdout_episodes: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Fraction of whole episodes never trained on; the critic is checked against their "
        "discounted Monte-Carlo returns",
    )
    improve_loss: Literal["full", "resample"] = Field(
        default="full",
        description="full: Σ_j g_ij‖·‖² over all M+1 support actions of improve_batch_size states; resample: "
        "one support action per state drawn with probability g_ij (same expected loss, M+1× cheaper), "
        "batch_size states per step",
    )
    # Critic (QGPO in-support softmax Q-learning).
    critic_kind: Literal["softmax-q", "iql"] = Field(
        default="iql",
        description="iql: expectile V (no behaviour samples); softmax-q: QGPO's target over critic_support "
        "behaviour samples at s' (the paper's)",
    )
    beta_q: float = Field(default=1.0, ge=0)
    expectile: float = Field(default=0.7, gt=0, lt=1, description="IQL only: expectile τ of the V regression")
    critic_support: int = Field(
        default=16, ge=1, description="Behaviour samples at each s' for the softmax target"
    )
    gamma: float = Field(default=0.99, gt=0, le=1)
    tau: float = Field(default=0.005, gt=0, le=1)
    critic_lr: float = Field(default=3e-4, gt=0)
    reward_scale: float | Literal["auto"] = Field(
        default="auto", description="Multiply rewards; 'auto' = 1000/(max_return − min_return) (IQL's)"
    )
    critic_grad_clip: float | None = Field(default=None, gt=0, description="QGPO clips none")
    # Optimisation.
    lr: float = Field(default=3e-4, gt=0)
    improve_lr: float | None = Field(
        default=3e-5,
        gt=0,
        description="Learning rate of the improvement phase (None: lr). Restarting at 3e-4 on 64 states per "
        "step undid the warm-up on Hopper medium within 1.3k steps (829 → 444; docs/bench/rl-ablations)",
    )
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
    action_noise: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Scale of the source noise when acting with one sample per state (training always "
        "samples at 1): 1 draws from the policy, 0 acts with the action the flow carries zero noise to. "
        "Seed 0, QIPO at 1 / 0.5 / 0: HalfCheetah medium 4002 / 4092 / 4087, Hopper medium-expert "
        "2095 / 2145 / 1103 (0 falls between the data's modes; docs/bench/rl-probes)",
    )
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
