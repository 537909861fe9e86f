"""QIPO (Algorithm 2 of arXiv 2503.04975, see docs/architecture.md) as a resumable step loop.

Phases by global step: [0, K1) behaviour warm-up (plain CFM), [K1, K1+K2) softmax-Q critic, then K3 steps
of policy improvement. In improvement each dataset state s_i owns a support set {a_i1..a_iM} ∪ {a_i^data}
sampled from the current policy; its weights g_ij = softmax_j(β·Q(s_i, a_ij)) are fixed until the next
renewal, every K_renew steps (after l renewals the target is μ·exp((l+1)βQ)).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from training import optim
from training.config import QIPOConfig
from training.critic import Critic, IQLCritic, SoftmaxQCritic
from training.data.dataset import TransitionDataset
from training.efm import q_weights, weighted_matching_loss
from training.networks import TwinQ, VelocityNet
from training.paths import make_path
from training.policy import BestOfNPolicy, FlowPolicy, Normalizer, integrate, repeat_rows

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def resolve_reward_scale(cfg: QIPOConfig, dataset: TransitionDataset) -> float:
    if cfg.reward_scale != "auto":
        return float(cfg.reward_scale)
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) > 1 else 0.0
    return 1000.0 / spread if spread > 0 else 1.0


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs where bfloat16 matmuls beat float32 (elsewhere they are slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sampling_dtype(precision: str) -> torch.dtype:
    if precision == "bfloat16" or (precision == "auto" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


def make_critic(cfg: QIPOConfig, obs_dim: int, act_dim: int) -> Critic:
    n = cfg.network
    q = TwinQ(obs_dim, act_dim, n.critic_hidden, n.critic_layers)
    if cfg.critic_kind == "iql":
        return IQLCritic(
            q,
            obs_dim=obs_dim,
            hidden=n.critic_hidden,
            layers=n.critic_layers,
            gamma=cfg.gamma,
            tau=cfg.tau,
            expectile=cfg.expectile,
            lr=cfg.critic_lr,
            grad_clip=cfg.grad_clip,
        )
    return SoftmaxQCritic(
        q, gamma=cfg.gamma, tau=cfg.tau, beta_q=cfg.beta_q, lr=cfg.critic_lr, grad_clip=cfg.grad_clip
    )


def next_state_rows(observations: np.ndarray, next_observations: np.ndarray) -> tuple[Tensor, Tensor]:
    """(next_index [N], extra [E]): s'_i is row next_index[i] of concat(observations, next_obs[extra])."""
    n = observations.shape[0]
    follows = np.zeros(n, dtype=bool)
    follows[:-1] = np.all(next_observations[:-1] == observations[1:], axis=1)
    extra = np.flatnonzero(~follows)
    index = np.arange(1, n + 1)
    index[extra] = n + np.arange(len(extra))
    return torch.as_tensor(index), torch.as_tensor(extra)


def cosine_lambda(total: int) -> Callable[[int], float]:
    return lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / max(total, 1)))


class QIPOTrainer:
    def __init__(self, dataset: TransitionDataset, cfg: QIPOConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.progress = progress
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.normalizer = Normalizer.fit(dataset.observations, dataset.action_low, dataset.action_high)
        norm = self.normalizer
        with torch.no_grad():
            self.s = norm.state(torch.as_tensor(dataset.observations))
            self.s_next = norm.state(torch.as_tensor(dataset.next_observations))
            self.a = norm.action_to_unit(torch.as_tensor(dataset.actions)).clamp(-1, 1)
        self.reward_scale = resolve_reward_scale(cfg, dataset)
        self.r = torch.as_tensor(dataset.rewards) * self.reward_scale
        self.d = torch.as_tensor(dataset.terminals, dtype=torch.float32)
        self.path = make_path(cfg.variant, cfg.solver)
        net_cfg = cfg.network
        self.net = VelocityNet(
            dataset.obs_dim, dataset.act_dim, net_cfg.hidden, net_cfg.blocks, net_cfg.time_dim
        )
        self.critic = make_critic(cfg, dataset.obs_dim, dataset.act_dim)
        # s' of transition i is usually s of transition i + 1: behaviour samples are drawn once per distinct
        # state, at `sample_states` = dataset states + the few s' that are not (episode ends); next_index[i]
        # is the row holding s'_i. The same samples at s seed the first support sets (the policy has not
        # changed since the behaviour warm-up), so the critic's pre-sampling costs no extra renewal.
        self.next_index, extra = next_state_rows(dataset.observations, dataset.next_observations)
        self.sample_states = torch.cat([self.s, self.s_next[extra]])
        self._params = list(self.net.parameters())
        self.opt = optim.adam(self._params, cfg.lr)
        self.sched = self._scheduler(cfg.behavior_steps)
        self.step = 0
        self.renewals = 0
        self.behavior_samples: Tensor | None = None  # [N + E, Mc, A] at sample_states (critic targets)
        self.support: Tensor | None = None  # [N, M+1, A], the dataset action last
        self.support_w: Tensor | None = None  # [N, M+1]
        self.history: list[dict[str, Any]] = []
        self.renewal_s: list[float] = []  # wall time of each renewal (sampling + weights)
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

    def phase(self, step: int) -> str:
        if step < self.k1:
            return "behavior"
        if step < self.k1 + self.k2:
            return "critic"
        return "improve"

    def _scheduler(self, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr
            group["initial_lr"] = self.cfg.lr
        fn = cosine_lambda(steps) if self.cfg.lr_schedule == "cosine" else (lambda k: 1.0)
        return torch.optim.lr_scheduler.LambdaLR(self.opt, fn)

    # ----- policy -----------------------------------------------------------------------------------
    def policy(self) -> FlowPolicy:
        """The exported module: one sample per state, or best-of-N by the critic's Q."""
        if self.cfg.action_selection == "best-of-n":
            return BestOfNPolicy(
                self.net, self.normalizer, self.path, self.cfg.steps, self.critic.q, self.cfg.best_of_n
            ).eval()
        return FlowPolicy(self.net, self.normalizer, self.path, self.cfg.steps).eval()

    @torch.inference_mode()
    def sample_unit_actions(self, s_norm: Tensor, m: int, desc: str = "sampling") -> Tensor:
        """m policy samples (unit box) for every state, in batched no-grad passes: [N, m, A]."""
        n, a_dim = s_norm.shape[0], self.dataset.act_dim
        out = torch.empty(n, m, a_dim)
        rows_per_pass = max(1, self.cfg.sample_batch // m)
        starts = range(0, n, rows_per_pass)
        for lo in tqdm(starts, desc=desc, unit="pass", leave=False, disable=not self.progress):
            s = s_norm[lo : lo + rows_per_pass]
            b = s.shape[0]
            noise = torch.randn(b * m, a_dim, generator=self.gen)
            with torch.autocast("cpu", dtype=self.sample_dtype, enabled=self.sample_dtype != torch.float32):
                x = integrate(self.net, self.path, s, noise, self.cfg.steps, repeats=m)
            out[lo : lo + b] = x.float().clamp(-1, 1).reshape(b, m, a_dim)
        return out

    def renew_support(self) -> None:
        """Resample every state's M policy actions, keep the dataset action, recompute softmax(β·Q)."""
        started = time.perf_counter()
        m, n = self.cfg.support_size, self.dataset.size
        reuse = (
            self.renewals == 0 and self.behavior_samples is not None and self.behavior_samples.shape[1] == m
        )
        if reuse:  # still the behaviour policy: its samples at s were drawn for the critic
            assert self.behavior_samples is not None
            sampled = self.behavior_samples[:n]
        else:
            sampled = self.sample_unit_actions(self.s, m, desc=f"renewal {self.renewals}")
        self.support = torch.cat([sampled, self.a.unsqueeze(1)], dim=1)
        self.support_w = self.support_weights(self.s, self.support)
        self.renewals += 1
        self.renewal_s.append(round(time.perf_counter() - started, 3))

    @torch.inference_mode()
    def support_weights(self, s: Tensor, support: Tensor) -> Tensor:
        n, m, a_dim = support.shape
        q = torch.empty(n, m)
        chunk = max(1, 65536 // m)
        for lo in range(0, n, chunk):
            ss = s[lo : lo + chunk]
            b = ss.shape[0]
            q[lo : lo + b] = self.critic.q.q_min(
                repeat_rows(ss, m), support[lo : lo + b].reshape(b * m, a_dim)
            ).reshape(b, m)
        return q_weights(q, self.cfg.beta, dim=-1)

    # ----- one step of each phase -------------------------------------------------------------------
    def _batch(self, size: int | None = None) -> Tensor:
        return torch.randint(0, self.dataset.size, (size or self.cfg.batch_size,), generator=self.gen)

    def flow_loss(self, s: Tensor, x1: Tensor, weights: Tensor | None = None) -> Tensor:
        """x1 [B, A] (plain CFM) or [B, M, A] with weights [B, M] (energy-weighted over support sets)."""
        shape = x1.shape
        cond = self.net.condition(s)  # once per state, shared by its support actions
        if x1.dim() == 3:
            cond = repeat_rows(cond, shape[1])
        flat = x1.reshape(-1, shape[-1])
        x0 = torch.randn(flat.shape, generator=self.gen)
        t = self.path.sample_t(flat.shape[0], generator=self.gen)
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
        assert self.support is not None and self.support_w is not None
        if self.cfg.improve_loss == "resample":
            # One support action per state, drawn with probability g_ij: the same expected loss as the
            # weighted sum over the set, at the cost of a behaviour step.
            idx = self._batch()
            pick = torch.multinomial(self.support_w[idx], 1, generator=self.gen).squeeze(-1)
            loss = self.flow_loss(self.s[idx], self.support[idx, pick])
        else:
            idx = self._batch(self.cfg.improve_batch_size)
            loss = self.flow_loss(self.s[idx], self.support[idx], self.support_w[idx])
        self._policy_step(loss)
        return loss.item()

    # ----- the loop ---------------------------------------------------------------------------------
    def _enter_phase(self, step: int) -> None:
        """Work done once at a phase boundary (also when resuming exactly there)."""
        if step == self.k1 and self.k2 > 0 and self.critic.needs_next_actions:
            self.behavior_samples = self.sample_unit_actions(
                self.sample_states, self.cfg.critic_support, "behaviour samples for the critic"
            )
        if step == self.k1 + self.k2 and self.k3 > 0:
            self.sched = self._scheduler(self.k3)
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
                record = {
                    "step": self.step,
                    "phase": phase,
                    "loss": float(np.mean(self._window)),
                    "last_loss": loss,
                    "lr": self.opt.param_groups[0]["lr"],
                    "renewals": self.renewals,
                    "renewal_s": self.renewal_s[-1] if self.renewal_s else None,
                    "elapsed_s": round(time.perf_counter() - started, 3),
                }
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
            "config": self.cfg.model_dump(mode="json"),
            "dataset_sha256": self.dataset.fingerprint(),
            "step": self.step,
            "renewals": self.renewals,
            "net": self.net.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "critic": self.critic.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "gen": self.gen.get_state(),
            "behavior_samples": self.behavior_samples,
            "support": self.support,
            "support_w": self.support_w,
            "history": json.dumps(self.history),
            "renewal_s": json.dumps(self.renewal_s),
            "loss_window": json.dumps(self._window),
        }

    def save(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{CHECKPOINT}.tmp"
        torch.save(self.state_dict(), tmp)
        tmp.replace(run_dir / CHECKPOINT)
        (run_dir / "config.json").write_text(self.cfg.model_dump_json(indent=2) + "\n")
        return run_dir / CHECKPOINT

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["dataset_sha256"] != self.dataset.fingerprint():
            raise ValueError(
                "checkpoint was trained on a different dataset (sha256 differs); pass the same data"
            )
        self.net.load_state_dict(state["net"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.critic.load_state_dict(state["critic"])
        self.step = int(state["step"])
        self.renewals = int(state["renewals"])
        phase_steps = self.k3 if self.step >= self.k1 + self.k2 else self.k1
        self.sched = self._scheduler(phase_steps)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])
        self.behavior_samples = state["behavior_samples"]
        self.support = state["support"]
        self.support_w = state["support_w"]
        self.history = json.loads(state["history"])
        self.renewal_s = json.loads(state["renewal_s"])
        self._window = json.loads(state["loss_window"])

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
        self.net.load_state_dict(state["net"])
        self.step = self.k1


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; train first with `qipo train`")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def policy_from_checkpoint(path: Path) -> tuple[FlowPolicy, QIPOConfig, dict[str, Any]]:
    """Rebuild the exported/evaluated policy from a checkpoint alone (no dataset needed)."""
    state = load_checkpoint(path)
    cfg = QIPOConfig.model_validate(state["config"])
    norm_state = state["normalizer"]
    normalizer = Normalizer(
        norm_state["obs_mean"].numpy(),
        norm_state["obs_std"].numpy(),
        norm_state["act_low"].numpy(),
        norm_state["act_high"].numpy(),
    )
    normalizer.load_state_dict(norm_state)
    obs_dim, act_dim = normalizer.obs_dim, normalizer.act_dim
    n = cfg.network
    net = VelocityNet(obs_dim, act_dim, n.hidden, n.blocks, n.time_dim)
    net.load_state_dict(state["net"])
    path_ = make_path(cfg.variant, cfg.solver)
    if cfg.action_selection == "best-of-n":
        q = TwinQ(obs_dim, act_dim, n.critic_hidden, n.critic_layers)
        q.load_state_dict(state["critic"]["q"])
        return BestOfNPolicy(net, normalizer, path_, cfg.steps, q, cfg.best_of_n).eval(), cfg, state
    return FlowPolicy(net, normalizer, path_, cfg.steps).eval(), cfg, state


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
