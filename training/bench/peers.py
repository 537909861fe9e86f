"""d3rlpy 2.8.1 IQL, TD3+BC and ReBRAC as peers: their locomotion settings, our arrays, a numpy act function.

The settings are those of d3rlpy's own reproduction scripts (reproductions/offline/{iql,td3_plus_bc}.py):
IQL with expectile 0.7, weight_temp 3.0, max_weight 100, rewards × 1000/(max − min episode return) and a
cosine actor learning rate over the whole run; TD3+BC with alpha 2.5, target smoothing 0.2/0.5 and the
actor updated every second step. Both standardise observations (StandardObservationScaler, fit on the
dataset), as QIPO does internally. d3rlpy rebuilds s' from the next row of each episode, so it reads the
same observations/actions/rewards/terminals/timeouts arrays as QIPO.

ReBRAC (Tarasov et al. 2023) is the tuned peer: d3rlpy's reproduction settings (3×256 actor, 3×256
LayerNorm critic, learning rates 1e-3, batch 1024, actor every second step) with the per-dataset actor and
critic BC coefficients the paper publishes for each D4RL locomotion dataset (`REBRAC_BETAS`); datasets it
did not tune on get its default (0.01, 0.01). A tuned peer is a harder bar than library defaults.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from qipo_client.policy import Noise, PolicyMetadata, as_states

from training.data.dataset import TransitionDataset

PeerAlgo = Literal["iql", "td3bc", "rebrac", "bc-mse"]
PEERS: tuple[PeerAlgo, ...] = ("iql", "td3bc", "rebrac", "bc-mse")

# (actor β, critic β) per D4RL locomotion dataset, from the ReBRAC paper's hyper-parameter table (d3rlpy's
# reproduction script carries the same values except halfcheetah-medium-expert, which it leaves out).
REBRAC_BETAS: dict[str, tuple[float, float]] = {
    "halfcheetah-random": (0.001, 0.1),
    "halfcheetah-medium": (0.001, 0.01),
    "halfcheetah-medium-replay": (0.01, 0.001),
    "halfcheetah-medium-expert": (0.01, 0.1),
    "hopper-random": (0.001, 0.01),
    "hopper-medium": (0.01, 0.001),
    "hopper-medium-replay": (0.05, 0.5),
    "hopper-medium-expert": (0.1, 0.01),
    "walker2d-random": (0.01, 0.0),
    "walker2d-medium": (0.05, 0.1),
    "walker2d-medium-replay": (0.05, 0.01),
    "walker2d-medium-expert": (0.01, 0.01),
}
REBRAC_DEFAULT_BETAS = (0.01, 0.01)


def rebrac_betas(dataset_name: str) -> tuple[float, float]:
    """The published (actor β, critic β) for a dataset named `env-kind` (e.g. `hopper-medium`), else the
    default. Exact names only: `halfcheetah-medium` must not match `halfcheetah-medium-expert`."""
    key = dataset_name.lower().removesuffix("-v0").removesuffix("-v2").replace("_", "-")
    return REBRAC_BETAS.get(key, REBRAC_DEFAULT_BETAS)


def peer_algo(name: str) -> PeerAlgo:
    """`name` as a peer, or a ValueError that lists the peers."""
    for algo in PEERS:
        if algo == name:
            return algo
    raise ValueError(f"unknown peer {name!r}; choose one of {PEERS}")


def _d3rlpy() -> Any:
    try:
        import d3rlpy
    except ImportError as exc:
        raise RuntimeError(
            f"the d3rlpy peers need d3rlpy 2.8.1 ({exc.name} is missing): run `make .venv/.d3rlpy`"
        ) from exc
    import structlog

    # d3rlpy logs every fit's dataset summary and model build through structlog at INFO: keep warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def d3rlpy_version() -> str:
    return str(_d3rlpy().__version__)


def mdp_dataset(data: TransitionDataset) -> Any:
    """Our arrays as a d3rlpy MDPDataset (episodes end at every terminal or timeout)."""
    d3rlpy = _d3rlpy()
    return d3rlpy.dataset.MDPDataset(
        observations=data.observations,
        actions=data.actions,
        rewards=data.rewards,
        terminals=data.terminals.astype(np.float32),
        timeouts=data.timeouts.astype(np.float32),
    )


def peer_config(algo: PeerAlgo, data: TransitionDataset, steps: int, dataset_key: str = "") -> Any:
    """The d3rlpy config for `algo` with its locomotion settings; `steps` sets IQL's cosine schedule and
    `dataset_key` (`env-kind`, e.g. `hopper-medium`) picks ReBRAC's published coefficients."""
    d3rlpy = _d3rlpy()
    pre = d3rlpy.preprocessing
    scalers: dict[str, Any] = {"observation_scaler": pre.StandardObservationScaler()}
    if not (np.all(data.action_low == -1) and np.all(data.action_high == 1)):
        # Both actors end in tanh: map other bounds onto [−1, 1] (MuJoCo locomotion needs no scaling).
        scalers["action_scaler"] = pre.MinMaxActionScaler(minimum=data.action_low, maximum=data.action_high)
    if algo == "iql":
        schedule = d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=steps)
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=schedule),
            batch_size=256,
            weight_temp=3.0,
            max_weight=100.0,
            expectile=0.7,
            reward_scaler=pre.ReturnBasedRewardScaler(multiplier=1000.0),
            **scalers,
        )
    if algo == "td3bc":
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            batch_size=256,
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            alpha=2.5,
            update_actor_interval=2,
            **scalers,
        )
    if algo == "rebrac":
        actor_beta, critic_beta = rebrac_betas(dataset_key or data.name)
        deep = d3rlpy.models.VectorEncoderFactory
        return d3rlpy.algos.ReBRACConfig(
            actor_learning_rate=1e-3,
            critic_learning_rate=1e-3,
            batch_size=1024,
            gamma=0.99,
            actor_encoder_factory=deep([256, 256, 256]),
            critic_encoder_factory=deep([256, 256, 256], use_layer_norm=True),
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            update_actor_interval=2,
            actor_beta=actor_beta,
            critic_beta=critic_beta,
            **scalers,
        )
    if algo == "bc-mse":
        # The bar a user tries first on mixed data: a deterministic policy regressed onto the dataset's
        # actions (mean-squared error), d3rlpy's BC at its defaults except the shared batch of 256.
        return d3rlpy.algos.BCConfig(
            batch_size=256, learning_rate=1e-3, policy_type="deterministic", **scalers
        )
    raise ValueError(f"unknown peer {algo!r}; choose one of {PEERS}")


class PeerPolicy:
    """A d3rlpy peer as a `Policy` (qipo_client.policy), so the grid evaluates it as it evaluates QIPO: its
    greedy action (`predict`). The noise is not used: a deterministic actor has none to start from."""

    def __init__(self, model: Any, algo: str, data: TransitionDataset) -> None:
        self.model = model
        self.metadata = PolicyMetadata(
            name=f"d3rlpy-{algo}",
            obs_dim=data.obs_dim,
            act_dim=data.act_dim,
            action_low=tuple(float(x) for x in data.action_low),
            action_high=tuple(float(x) for x in data.action_high),
            env_id=data.env_id,
        )

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        return np.asarray(self.model.predict(as_states(states, self.metadata.obs_dim)), dtype=np.float32)

    def reset(self) -> None:
        """Stateless: every call stands alone."""


def train_peer(
    algo: PeerAlgo,
    data: TransitionDataset,
    steps: int,
    seed: int,
    on_step: Callable[[int, PeerPolicy], None] | None = None,
    dataset_key: str = "",
) -> dict[str, Any]:
    """Train `algo` for `steps` gradient steps on CPU; `on_step(step, policy)` runs after every step with
    the model as a `PeerPolicy`. Returns the fitted config (scalers included) as d3rlpy serialises it."""
    d3rlpy = _d3rlpy()
    d3rlpy.seed(seed)
    model = peer_config(algo, data, steps, dataset_key).create(device="cpu:0")

    policy = PeerPolicy(model, algo, data)

    def callback(_algo: Any, _epoch: int, total_step: int) -> None:
        if on_step is not None:
            on_step(total_step, policy)

    model.fit(
        mdp_dataset(data),
        n_steps=steps,
        n_steps_per_epoch=steps,  # one epoch: evaluation happens in the callback, at steps we choose
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
        save_interval=10**9,
        callback=callback,
    )
    params: dict[str, Any] = json.loads(model.config.serialize())
    return {"d3rlpy": str(d3rlpy.__version__), "class": type(model.config).__name__} | params
