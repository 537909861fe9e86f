"""QIPO (Algorithm 2 of arXiv 2503.04975, see docs/architecture.md) as a resumable step loop.

Phases by global step: [0, K1) behaviour warm-up (plain CFM), [K1, K1+K2) softmax-Q critic, then K3 steps
of policy improvement. In improvement each dataset state s_i owns a support set {a_i1..a_iM} ∪ {a_i^data}
sampled from the policy as it was at the last renewal; its weights g_ij = softmax_j(β·Q(s_i, a_ij)) are fixed
until the next renewal, every K_renew steps (after l renewals the target is μ·exp((l+1)βQ)).

Renewal is lazy by default: at each renewal the policy is frozen, and a state's support set is drawn from
that frozen copy the first time a batch needs it, with noise seeded by (seed, renewal, state index). That is
the distribution of Algorithm 2's eager renewal at a cost that follows the states one renewal period touches
(`renew_every × improve_batch_size`) instead of the dataset size; eager renewal (`renewal: "eager"`) builds
the very same sets. How sharp the weights are is set once per renewal on a fixed probe of states
(`training.temperature`), so both orders use the same temperature.

Under torchrun every rank draws the global batch from the shared generator and trains on its slice, with
gradients averaged across ranks (`training.distributed`): W processes train what one does.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from training import distributed, optim
from training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from training.chunks import chunk_windows, restrict_check, windowed_next_rows
from training.config import QIPOConfig
from training.critic import Critic, IQLCritic, SoftmaxQCritic
from training.data.dataset import TransitionDataset
from training.device import sampling_dtype
from training.diagnostics import (
    advantage_vs_returns,
    critic_vs_returns,
    holdout_split,
    return_check,
    trust_warnings,
)
from training.efm import q_weights, weighted_matching_loss
from training.networks import TwinQ, VelocityNet
from training.paths import make_path
from training.policy import BestOfNPolicy, FlowPolicy, Normalizer, integrate, repeat_rows
from training.support import SupportSets
from training.temperature import effective_beta, probe_indices, weight_stats
from training.trust_region import advantage_gate, anchor_weights, ranked_anchor_weights, trusted_anchor

log = logging.getLogger(__name__)

ADVANTAGE_ROWS = 1024  # held-out steps the within-state diagnostic samples the policy at (~1 s on a CPU)
ADVANTAGE_KEY = -1  # its `support_noise` key: no renewal draws with it, and it never touches `self.gen`
ADVANTAGE_KEYS = ("adv_mc_corr", "q_data_rank")


def resolve_reward_scale(cfg: QIPOConfig, dataset: TransitionDataset) -> float:
    if cfg.reward_scale != "auto":
        return float(cfg.reward_scale)
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) > 1 else 0.0
    return 1000.0 / spread if spread > 0 else 1.0


def make_critic(cfg: QIPOConfig, obs_dim: int, act_dim: int) -> Critic:
    """A critic over `act_dim`-dimensional actions (H·A for chunks) that discounts its bootstrap by γ^H:
    one backup spans a whole chunk (`training.chunks`)."""
    n = cfg.network
    gamma = cfg.gamma**cfg.action_horizon
    q = TwinQ(obs_dim, act_dim, n.critic_hidden, n.critic_layers)
    if cfg.critic_kind == "iql":
        return IQLCritic(
            q,
            obs_dim=obs_dim,
            hidden=n.critic_hidden,
            layers=n.critic_layers,
            gamma=gamma,
            tau=cfg.tau,
            expectile=cfg.expectile,
            lr=cfg.critic_lr,
            grad_clip=cfg.critic_grad_clip,
        )
    return SoftmaxQCritic(
        q, gamma=gamma, tau=cfg.tau, beta_q=cfg.beta_q, lr=cfg.critic_lr, grad_clip=cfg.critic_grad_clip
    )


def support_noise(seed: int, renewal: int, rows: Tensor, m: int, act_dim: int) -> Tensor:
    """[len(rows), m, A] standard normal noise, each row's drawn from its own generator seeded by
    (seed, renewal, row): a state's support set does not depend on when, or beside which others, it is
    drawn."""
    out = torch.empty(len(rows), m, act_dim, device="cpu")
    gen = torch.Generator(device="cpu")
    base = (seed * 1_000_003 + renewal) * 10_000_019
    for k, row in enumerate(rows.tolist()):
        gen.manual_seed((base + row) % (1 << 62))
        out[k] = torch.randn(m, act_dim, generator=gen, device="cpu")
    return out


def next_state_rows(observations: np.ndarray, next_observations: np.ndarray) -> tuple[Tensor, Tensor]:
    """(next_index [N], extra [E]): s'_i is row next_index[i] of concat(observations, next_obs[extra])."""
    index, extra = windowed_next_rows(observations, next_observations, 1)
    return torch.as_tensor(index), torch.as_tensor(extra)


def cosine_lambda(total: int) -> Callable[[int], float]:
    return lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / max(total, 1)))


class QIPOTrainer:
    def __init__(self, dataset: TransitionDataset, cfg: QIPOConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.progress = progress
        self.cluster = distributed.current()  # rank 0 of 1 unless launched by torchrun (training.distributed)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.normalizer = Normalizer.fit(dataset.observations, dataset.action_low, dataset.action_high)
        norm = self.normalizer
        self.reward_scale = resolve_reward_scale(cfg, dataset)
        rewards = torch.as_tensor(dataset.rewards) * self.reward_scale  # per step
        # "The action" of row t is the window a_{t:t+H} (training.chunks; H = 1: the transition itself):
        # the flow and the critic see [N, H·A], each action of a chunk normalised as a single action is,
        # and the critic backs up the H-step reward sum r, the terminal-in-window d and s' = s_{t+H}.
        self.windows = chunk_windows(
            rewards.cpu().numpy(), dataset.terminals, dataset.timeouts, cfg.action_horizon, cfg.gamma
        )
        win = self.windows
        self.act_dim = dataset.act_dim * cfg.action_horizon
        next_states = dataset.next_observations[win.next_rows]
        with torch.no_grad():
            self.s = norm.state(torch.as_tensor(dataset.observations))
            self.s_next = norm.state(torch.as_tensor(next_states))
            unit = norm.action_to_unit(torch.as_tensor(dataset.actions)).clamp(-1, 1)
            self.a = unit[torch.as_tensor(win.action_rows)].reshape(dataset.size, self.act_dim)
        self.r = torch.as_tensor(win.rewards)
        self.d = torch.as_tensor(win.dones, dtype=torch.float32)
        self.path = make_path(cfg.variant, cfg.solver)
        net_cfg = cfg.network
        self.net = VelocityNet(
            dataset.obs_dim, self.act_dim, net_cfg.hidden, net_cfg.blocks, net_cfg.time_dim
        )
        self.critic = make_critic(cfg, dataset.obs_dim, self.act_dim)
        # Whole episodes held out of every phase: the critic is checked against their Monte-Carlo returns.
        fraction = cfg.holdout_episodes if cfg.algo == "qipo" else 0.0
        train_rows, held = holdout_split(dataset.terminals, dataset.timeouts, fraction, cfg.seed)
        self.train_rows = torch.as_tensor(train_rows[win.valid[train_rows]])  # rows that start a window
        # Monte-Carlo returns where episodes are long enough, else n-step returns closed by the critic
        check = return_check(
            rewards.cpu().numpy(),
            dataset.terminals,
            dataset.timeouts,
            held,
            cfg.gamma,
            int(3 / (1 - cfg.gamma)),
        )
        self.return_check = restrict_check(check, win.valid)
        self.mc_rows = torch.as_tensor(self.return_check.rows)
        k = min(ADVANTAGE_ROWS, len(self.mc_rows))  # evenly spaced over the held-out steps, fixed
        self.adv_index = (np.arange(k) * len(self.mc_rows)) // max(k, 1)
        self._advantage_at: tuple[int, dict[str, float | None]] | None = None  # (step, result)
        self.probe = self.train_rows[probe_indices(len(self.train_rows), cfg.probe_states, cfg.seed)]
        # s' of window i (s_{i+H}) is usually s of row i + H: behaviour samples are drawn once per distinct
        # state, at `sample_states` = dataset states + the few s' that are not (episode ends); next_index[i]
        # is the row holding s'_i. With the same keyed noise, the samples at s are renewal 0's support sets
        # (the policy has not changed since the behaviour warm-up), so that renewal costs no sampling.
        next_index, extra = windowed_next_rows(dataset.observations, next_states, cfg.action_horizon)
        self.next_index = torch.as_tensor(next_index)
        self.sample_states = torch.cat([self.s, self.s_next[torch.as_tensor(extra)]])
        self._params = list(self.net.parameters())
        self.opt = optim.adam(self._params, cfg.lr)
        self.sched = self._scheduler(cfg.behavior_steps)
        self.step = 0
        self.renewals = 0
        self.behavior_samples: Tensor | None = None  # [N + E, Mc, A] at sample_states (critic targets)
        self.frozen: VelocityNet | None = None  # the policy as of the last renewal
        self.supports: SupportSets | None = None  # sets drawn since the last renewal, the dataset action last
        self.beta_eff = cfg.beta  # inverse temperature on raw Q for the current renewal
        self.anchor_eff = cfg.data_anchor  # λ of the current renewal (the trust gate moves it)
        self.history: list[dict[str, Any]] = []
        self.renewal_log: list[dict[str, Any]] = []  # per renewal: β, ESS, data weight, seconds
        self._window: list[float] = []  # losses since the last log record
        self.sample_dtype = sampling_dtype(cfg.sample_precision)

    # ----- schedule ---------------------------------------------------------------------------------
    @property
    def k1(self) -> int:
        return self.cfg.behavior_steps

    @property
    def k2(self) -> int:
        return 0 if self.cfg.algo == "bc" else self.cfg.critic_steps

    @property
    def k3(self) -> int:
        return 0 if self.cfg.algo == "bc" else self.cfg.improve_steps

    @property
    def total_steps(self) -> int:
        return self.k1 + self.k2 + self.k3

    @property
    def renewal_s(self) -> list[float]:
        return [r["seconds"] for r in self.renewal_log]

    def phase(self, step: int) -> str:
        if step < self.k1:
            return "behavior"
        if step < self.k1 + self.k2:
            return "critic"
        return "improve"

    def _scheduler(self, steps: int, lr: float | None = None) -> torch.optim.lr_scheduler.LambdaLR:
        lr = self.cfg.lr if lr is None else lr
        for group in self.opt.param_groups:
            group["lr"] = lr
            group["initial_lr"] = lr
        fn = cosine_lambda(steps) if self.cfg.lr_schedule == "cosine" else (lambda k: 1.0)
        return torch.optim.lr_scheduler.LambdaLR(self.opt, fn)

    # ----- policy -----------------------------------------------------------------------------------
    def policy(
        self, selection: Literal["sample", "best-of-n"] | None = None, noise_scale: float | None = None
    ) -> FlowPolicy:
        """The exported module: one sample per state, or best-of-N by the critic's Q (default: the
        config's `action_selection`); one sample is drawn at `noise_scale` (default: the config's
        `action_noise`)."""
        if (selection or self.cfg.action_selection) == "best-of-n":
            if self.cfg.algo == "bc":
                raise ValueError("best-of-n ranks candidates by the critic, and algo bc trains none")
            return BestOfNPolicy(
                self.net,
                self.normalizer,
                self.path,
                self.cfg.steps,
                self.critic.q,
                self.cfg.best_of_n,
                horizon=self.cfg.action_horizon,
            ).eval()
        scale = self.cfg.action_noise if noise_scale is None else noise_scale
        horizon = self.cfg.action_horizon
        return FlowPolicy(self.net, self.normalizer, self.path, self.cfg.steps, scale, horizon).eval()

    @torch.inference_mode()
    def sample_unit_actions(
        self, net: VelocityNet, s_norm: Tensor, rows: Tensor, m: int, renewal: int, desc: str = "sampling"
    ) -> Tensor:
        """m samples (unit box) of `net` at states `s_norm[rows]`, keyed noise, batched: [len(rows), m, A]."""
        n, a_dim = len(rows), self.act_dim
        out = torch.empty(n, m, a_dim)
        rows_per_pass = max(1, self.cfg.sample_batch // m)
        starts = range(0, n, rows_per_pass)
        bar = tqdm(starts, desc=desc, unit="pass", leave=False, disable=not self.progress or len(starts) < 4)
        for lo in bar:
            chunk = rows[lo : lo + rows_per_pass]
            b = len(chunk)
            noise = support_noise(self.cfg.seed, renewal, chunk.cpu(), m, a_dim).reshape(b * m, a_dim)
            noise = noise.to(s_norm.device)
            with torch.autocast("cpu", dtype=self.sample_dtype, enabled=self.sample_dtype != torch.float32):
                x = integrate(net, self.path, s_norm[chunk], noise, self.cfg.steps, repeats=m)
            out[lo : lo + b] = x.float().clamp(-1, 1).reshape(b, m, a_dim)
        return out

    def renew_support(self) -> None:
        """Freeze the policy, forget every support set, and fix this renewal's temperature on the probe."""
        started = time.perf_counter()
        n, m, a_dim = self.dataset.size, self.cfg.support_size, self.act_dim
        self.renewals += 1
        self.frozen = copy.deepcopy(self.net).eval().requires_grad_(False)
        if self.supports is None:
            self.supports = SupportSets(n, m + 1, a_dim)
        self.supports.clear()
        if self.cfg.renewal == "eager":
            self._draw_every_set()
        if self.cfg.anchor_gate == "trust":  # the critic checked against the policy just frozen
            adv = self.advantage_diagnostics()["adv_mc_corr"]
            self.anchor_eff = trusted_anchor(self.cfg.data_anchor, adv, self.cfg.trust_corr)
        # Each rank draws its block of the probe; all see every probe Q, so β is the same on every rank.
        probe_q = distributed.split_rows(self.probe, self._support_q_for)
        self.beta_eff = effective_beta(probe_q, self.cfg.temperature, self.cfg.beta, self.cfg.target_ess)
        stats = weight_stats(self.weights_of(probe_q))
        self.renewal_log.append(
            {
                "renewal": self.renewals - 1,
                "step": self.step,
                "beta_eff": round(self.beta_eff, 6),
                "data_anchor_eff": round(self.anchor_eff, 6),
                **stats,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        self.renewal_log[-1] |= self.advantage_diagnostics()  # the critic against the policy just frozen
        log.info("renewal %d: %s", self.renewals - 1, json.dumps(self.renewal_log[-1]))

    def _support_q_for(self, rows: Tensor) -> Tensor:
        """Draw the support sets of `rows` not drawn since the last renewal; return their Q [len, M+1]."""
        self.ensure_support(rows)
        assert self.supports is not None
        return self.supports.q(rows)

    def ensure_support(self, rows: Tensor) -> None:
        """Draw (from the frozen policy, keyed noise) and score the support sets of rows not yet drawn."""
        assert self.supports is not None
        todo = self.supports.missing(rows)
        if len(todo) > 0:
            self.supports.put(todo, *self._draw_support(todo))

    def _draw_support(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The support sets of `rows` ([k, M+1, A], the dataset action last) and their Q [k, M+1]."""
        assert self.frozen is not None, "support sets are drawn after a renewal froze the policy"
        m, current = self.cfg.support_size, self.renewals - 1
        samples = self.behavior_samples
        if current == 0 and samples is not None and samples.shape[1] == m:
            sampled = samples[rows]  # same net, same keyed noise: renewal 0's draw
        else:
            sampled = self.sample_unit_actions(self.frozen, self.s, rows, m, current, "support sets")
        if self.cfg.support_ascent > 0:
            sampled = self.ascend(self.s[rows], sampled, self.cfg.support_ascent)
        support = torch.cat([sampled, self.a[rows].unsqueeze(1)], dim=1)
        return support, self.score(self.s[rows], support)

    def ascend(self, s: Tensor, actions: Tensor, step: float, chunk: int = 65536) -> Tensor:
        """actions [k, M, A] (unit box) moved by `step`·∇ₐQ_min / mean‖∇ₐQ_min‖, clipped to the box.

        The gradient's scale is normalised over the whole draw, so `step` is in action units whatever
        the units of Q, and a sample where Q is flat moves less than one on a slope."""
        k, m, a_dim = actions.shape
        flat = actions.reshape(k * m, a_dim)
        grads = torch.empty_like(flat)
        states = repeat_rows(s, m)
        with torch.inference_mode(False), torch.enable_grad():
            for lo in range(0, k * m, chunk):
                a = flat[lo : lo + chunk].clone().requires_grad_(True)
                q = self.critic.q.q_min(states[lo : lo + chunk].clone(), a)
                (grads[lo : lo + chunk],) = torch.autograd.grad(q.sum(), a)
        scale = grads.norm(dim=-1).mean().clamp_min(1e-12)
        return (flat + step * grads / scale).clamp(-1, 1).reshape(k, m, a_dim)

    def _draw_every_set(self, chunk: int = 1 << 18) -> None:
        """Eager renewal, `chunk` states at a time (so the scratch memory does not grow with the dataset).
        Under torchrun each rank draws a block of every chunk and all gather it: the time divides by the
        world size, and every rank then holds every set."""
        assert self.supports is not None
        m1, a_dim = self.cfg.support_size + 1, self.act_dim

        def packed(rows: Tensor) -> Tensor:
            support, q = self._draw_support(rows)
            return torch.cat([support.reshape(len(rows), m1 * a_dim), q], dim=1)

        self.supports.reserve(self.dataset.size)
        for lo in range(0, self.dataset.size, chunk):
            rows = torch.arange(lo, min(lo + chunk, self.dataset.size))
            if not self.cluster.enabled:
                self.ensure_support(rows)
                continue
            table = distributed.split_rows(rows, packed)
            self.supports.put(rows, table[:, : m1 * a_dim].reshape(-1, m1, a_dim), table[:, m1 * a_dim :])

    @torch.inference_mode()
    def score(self, s: Tensor, support: Tensor) -> Tensor:
        """min-twin Q of every support action: [B, M+1]."""
        n, m, a_dim = support.shape
        q = torch.empty(n, m)
        chunk = max(1, 65536 // m)
        for lo in range(0, n, chunk):
            ss = s[lo : lo + chunk]
            b = ss.shape[0]
            q[lo : lo + b] = self.critic.q.q_min(
                repeat_rows(ss, m), support[lo : lo + b].reshape(b * m, a_dim)
            ).reshape(b, m)
        return q

    def support_weights(self, rows: Tensor) -> Tensor:
        """softmax over each row's support set of β_eff·Q: [len(rows), M+1]."""
        return self.weights_of(self._support_q_for(rows))

    def weights_of(self, q: Tensor) -> Tensor:
        """The weights the improvement loss applies to support sets with Q [B, M+1]: softmax(β_eff·Q),
        with `data_anchor` of each row moved onto its dataset action."""
        weights = q_weights(q, self.beta_eff, dim=-1)
        if self.cfg.anchor_gate == "rank":
            return ranked_anchor_weights(weights, q, self.cfg.data_anchor)
        gate = advantage_gate(q) if self.cfg.anchor_gate == "advantage" else None
        return anchor_weights(weights, self.anchor_eff, gate)

    # ----- diagnostics ------------------------------------------------------------------------------
    @torch.inference_mode()
    def critic_diagnostics(self) -> dict[str, Any]:
        """Q(s, a) at dataset actions of the held-out episodes against their discounted returns."""
        if len(self.mc_rows) == 0:
            return {"q_mc_corr": None, "q_mc_bias": None, "q_mc_rows": 0}
        q = self.critic.q.q_min(self.s[self.mc_rows], self.a[self.mc_rows]).cpu().numpy()
        return critic_vs_returns(q.astype(np.float64), self.check_returns())

    @torch.inference_mode()
    def check_returns(self) -> np.ndarray:
        """The held-out targets of `return_check` under the current critic (n-step ones bootstrap from it)."""
        check = self.return_check
        if not check.needs_q:
            return check.targets()
        boot = torch.as_tensor(check.boot_rows)
        return check.targets(self.critic.q.q_min(self.s[boot], self.a[boot]).cpu().numpy())

    @torch.inference_mode()
    def advantage_diagnostics(self) -> dict[str, Any]:
        """Q's ranking within states (`training.diagnostics.advantage_vs_returns`): on a fixed subset of
        the held-out steps, Q at the dataset action against Q at `support_size` samples of the current
        policy, drawn with their own keyed noise (deterministic; `self.gen` untouched, so training is the
        same with or without it).

        It samples the policy: 1,024 states × M × solver steps, 1–1.5 s on one Hopper CPU thread, where a
        critic step takes ~20 ms: at each of the default 300 critic log rows it would add over half to the
        critic phase. So it runs once the critic is trained (the critic phase's last row; the net does not
        move during that phase), at each renewal (into `renewal_log`, hence the improve rows) and in the
        summary.
        """
        if len(self.adv_index) == 0:
            return {k: None for k in ADVANTAGE_KEYS}
        if self._advantage_at is not None and self._advantage_at[0] == self.step:
            return dict(self._advantage_at[1])  # the critic phase's last row, renewal 0 and the summary
        # can all ask at one step, where net and critic are the same
        rows = self.mc_rows[torch.as_tensor(self.adv_index)]
        m = self.cfg.support_size
        samples = distributed.split_rows(
            rows,
            lambda block: self.sample_unit_actions(self.net, self.s, block, m, ADVANTAGE_KEY, "advantage"),
        )
        q_samples = self.score(self.s[rows], samples)
        q_data = self.critic.q.q_min(self.s[rows], self.a[rows])
        out = advantage_vs_returns(
            q_data.cpu().numpy(), q_samples.cpu().numpy(), self.check_returns()[self.adv_index]
        )
        self._advantage_at = (self.step, out)
        return dict(out)

    def summary(self) -> dict[str, Any]:
        """What a user reads before any rollout: the critic's checks (within states: against the current
        policy's samples) and how peaked each renewal was. `sample_dtype` is what `sample_precision: auto`
        resolved to on this machine: support sets (so scores) depend on it. `critic_check` says what the
        critic was compared with (Monte-Carlo or n-step returns); `warnings` what looks untrustworthy."""
        out: dict[str, Any] = {
            "reward_scale": self.reward_scale,
            "sample_dtype": str(self.sample_dtype).removeprefix("torch."),
            "renewals": self.renewal_log,
            "critic_check": self.return_check.describe(),
        }
        if self.k2 > 0 and self.step >= self.k1:
            out["critic"] = self.critic_diagnostics() | self.advantage_diagnostics()
        out["warnings"] = trust_warnings(
            out.get("critic"), self.renewal_log, self.cfg.support_size, out["critic_check"]
        )
        return out

    # ----- one step of each phase -------------------------------------------------------------------
    def _batch(self, size: int | None = None) -> Tensor:
        """This rank's slice of a global batch drawn from the generator every rank shares."""
        n = size or self.cfg.batch_size
        pick = torch.randint(0, len(self.train_rows), (n,), generator=self.gen)
        return self.train_rows[pick[self.cluster.shard(n)]]

    def _global_draw(self, draw: Callable[[int], Tensor], local_rows: int) -> Tensor:
        """`draw(n)` for the global batch's n rows, this rank's slice (the whole of it in one process)."""
        world = self.cluster.world_size
        return draw(local_rows * world)[self.cluster.shard(local_rows * world)]

    def flow_loss(self, s: Tensor, x1: Tensor, weights: Tensor | None = None) -> Tensor:
        """x1 [B, A] (plain CFM) or [B, M, A] with weights [B, M] (energy-weighted over support sets)."""
        shape = x1.shape
        cond = self.net.condition(s)  # once per state, shared by its support actions
        if x1.dim() == 3:
            cond = repeat_rows(cond, shape[1])
        flat = x1.reshape(-1, shape[-1])
        n, a_dim = flat.shape
        x0 = self._global_draw(lambda k: torch.randn((k, a_dim), generator=self.gen), n)
        t = self._global_draw(lambda k: self.path.sample_t(k, generator=self.gen), n)
        xt, target = self.path.interpolate(x0, flat, t)
        pred = self.net.velocity(xt, t, cond)
        return weighted_matching_loss(pred.reshape(shape), target.reshape(shape), weights)

    def _policy_step(self, loss: Tensor) -> None:
        optim.step(self.opt, loss, self._params, self.cfg.grad_clip)
        self.sched.step()

    def behavior_step(self) -> float:
        idx = self._batch()
        loss = self.flow_loss(self.s[idx], self.a[idx])
        self._policy_step(loss)
        return loss.item()

    def critic_step(self) -> float:
        idx = self._batch()
        a_next = None
        if self.critic.needs_next_actions:
            assert self.behavior_samples is not None
            a_next = self.behavior_samples[self.next_index[idx]]
        loss = self.critic.update(
            self.s[idx], self.a[idx], self.r[idx], self.d[idx], self.s_next[idx], a_next
        )
        return loss.item()

    def improve_step(self) -> float:
        assert self.supports is not None
        if self.cfg.improve_loss == "resample":
            # One support action per state, drawn with probability g_ij: the same expected loss as the
            # weighted sum over the set, at the cost of a behaviour step. Inverse-CDF on one uniform per
            # state of the global batch, so a rank draws its slice without the other ranks' weights.
            idx = self._batch()
            weights = self.support_weights(idx)
            u = self._global_draw(lambda k: torch.rand(k, generator=self.gen), len(idx)).to(weights.device)
            pick = (weights.cumsum(-1) < u.unsqueeze(-1)).sum(-1).clamp(max=weights.shape[-1] - 1)
            support = self.supports.actions(idx)
            loss = self.flow_loss(self.s[idx], support[torch.arange(len(idx), device=support.device), pick])
        else:
            idx = self._batch(self.cfg.improve_batch_size)
            weights = self.support_weights(idx)
            loss = self.flow_loss(self.s[idx], self.supports.actions(idx), weights)
        self._policy_step(loss)
        return loss.item()

    # ----- the loop ---------------------------------------------------------------------------------
    def _enter_phase(self, step: int) -> None:
        """Work done once at a phase boundary (also when resuming exactly there)."""
        if step == self.k1 and self.k2 > 0 and self.critic.needs_next_actions:
            rows = torch.arange(len(self.sample_states))
            self.behavior_samples = distributed.split_rows(  # a block per rank, gathered on every rank
                rows,
                lambda block: self.sample_unit_actions(
                    self.net,
                    self.sample_states,
                    block,
                    self.cfg.critic_support,
                    0,
                    "critic's behaviour samples",
                ),
            )
        if step == self.k1 + self.k2 and self.k3 > 0:
            self.sched = self._scheduler(self.k3, self.cfg.improve_lr)
        improve_step = step - self.k1 - self.k2
        if self.k3 > 0 and 0 <= improve_step < self.k3 and improve_step % self.cfg.renew_every == 0:
            self.renew_support()

    def train_step(self) -> tuple[str, float]:
        """One gradient step of whichever phase the global step is in (phase-boundary work first)."""
        self._enter_phase(self.step)
        phase = self.phase(self.step)
        step_fn = {"behavior": self.behavior_step, "critic": self.critic_step, "improve": self.improve_step}
        loss = step_fn[phase]()
        self.step += 1
        self._window.append(loss)
        return phase, loss

    def _record(self, phase: str, loss: float, elapsed: float) -> dict[str, Any]:
        mean_loss, loss = distributed.mean_across([float(np.mean(self._window)), loss])  # the global batch's
        record: dict[str, Any] = {
            "step": self.step,
            "phase": phase,
            "loss": mean_loss,
            "last_loss": loss,
            "lr": self.opt.param_groups[0]["lr"],
            "renewals": self.renewals,
            "renewal_s": self.renewal_s[-1] if self.renewal_log else None,
            "elapsed_s": round(elapsed, 3),
        }
        if phase == "critic" or (phase == "improve" and self.step == self.k1 + self.k2 + 1):
            record |= self.critic_diagnostics()
        if phase == "critic" and self.step == self.k1 + self.k2:
            record |= self.advantage_diagnostics()
        if phase == "improve" and self.renewal_log:
            last = self.renewal_log[-1]
            record |= {k: last[k] for k in ("beta_eff", "ess_fraction", "data_weight")}
            record |= {k: last[k] for k in ADVANTAGE_KEYS if k in last}  # older checkpoints lack them
        return record

    def fit(
        self,
        until: int | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Train up to global step `until` (default: the end); logs the mean loss every `log_every` steps."""
        end = self.total_steps if until is None else min(until, self.total_steps)
        bar = tqdm(total=end, initial=self.step, desc=self.cfg.algo, unit="step", disable=not self.progress)
        started = time.perf_counter()
        while self.step < end:
            phase, loss = self.train_step()
            bar.update(1)
            boundary = self.step in (self.k1, self.k1 + self.k2)
            if self.step % self.cfg.log_every == 0 or self.step == end or boundary:
                record = self._record(phase, loss, time.perf_counter() - started)
                self._window = []
                self.history.append(record)
                bar.set_postfix(phase=phase, loss=f"{record['loss']:.4f}")
                if on_log:
                    on_log(record)
            if on_step:
                on_step(self.step)
        bar.close()
        return self.history

    # ----- checkpoints (tensors and plain data only: loadable with weights_only=True) ---------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.model_dump(mode="json"),
            "dataset_sha256": self.dataset.fingerprint(),
            "step": self.step,
            "renewals": self.renewals,
            "net": self.net.state_dict(),
            "frozen": None if self.frozen is None else self.frozen.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "critic": self.critic.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "gen": self.gen.get_state(),
            "behavior_samples": self.behavior_samples,
            "supports": None if self.supports is None else self.supports.state_dict(),
            "beta_eff": self.beta_eff,
            "anchor_eff": self.anchor_eff,
            "history": json.dumps(self.history),
            "renewal_log": json.dumps(self.renewal_log),
            "loss_window": json.dumps(self._window),
        }

    def save(self, run_dir: Path) -> Path:
        return save_checkpoint(self.state_dict(), self.cfg, run_dir)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._advantage_at = None  # computed for the weights being replaced
        if state["dataset_sha256"] != self.dataset.fingerprint():
            raise ValueError(
                "checkpoint was trained on a different dataset (sha256 differs); pass the same data"
            )
        self.net.load_state_dict(state["net"])
        if state["frozen"] is not None:
            self.frozen = copy.deepcopy(self.net).eval().requires_grad_(False)
            self.frozen.load_state_dict(state["frozen"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.critic.load_state_dict(state["critic"])
        self.step = int(state["step"])
        self.renewals = int(state["renewals"])
        improving = self.step >= self.k1 + self.k2
        self.sched = self._scheduler(
            self.k3 if improving else self.k1, self.cfg.improve_lr if improving else None
        )
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        self.behavior_samples = state["behavior_samples"]
        self.supports = self._supports_from(state)
        self.beta_eff = float(state["beta_eff"])
        # the trust gate's λ of the renewal in progress; any other gate uses the configured λ
        trusted = self.cfg.anchor_gate == "trust"
        self.anchor_eff = float(state["anchor_eff"]) if trusted else self.cfg.data_anchor
        self.history = json.loads(state["history"])
        self.renewal_log = json.loads(state["renewal_log"])
        self._window = json.loads(state["loss_window"])

    def _supports_from(self, state: dict[str, Any]) -> SupportSets | None:
        """The checkpoint's drawn sets (rank 0's; any rank may use them: a set depends only on the frozen
        policy, the critic and its keyed noise)."""
        if state["supports"] is None:
            return None
        sets = SupportSets(self.dataset.size, self.cfg.support_size + 1, self.act_dim)
        sets.load_state_dict(state["supports"])
        return sets

    def load_behavior(self, checkpoint: Path) -> None:
        """Start from another run's behaviour policy (e.g. the BC run) and skip the warm-up."""
        state = load_checkpoint(checkpoint)
        if state["dataset_sha256"] != self.dataset.fingerprint():
            raise ValueError(
                f"{checkpoint} was trained on a different dataset; its behaviour policy cannot be reused"
            )
        other = QIPOConfig.model_validate(state["config"])
        if other.variant != self.cfg.variant or other.network != self.cfg.network:
            raise ValueError(
                f"{checkpoint} has variant {other.variant} and network {other.network.model_dump()}; this "
                f"run needs {self.cfg.variant} and {self.cfg.network.model_dump()} to reuse its behaviour "
                "policy"
            )
        if other.action_horizon != self.cfg.action_horizon:
            raise ValueError(
                f"{checkpoint} models chunks of {other.action_horizon} actions and this run "
                f"{self.cfg.action_horizon}; train its behaviour policy with the same action_horizon"
            )
        self.net.load_state_dict(state["net"])
        self.step = self.k1
