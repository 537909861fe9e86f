"""The policy as one module: raw state + noise → action in env units. This module *is* what gets
exported, so evaluation and serving run the same computation, and it implements the `Policy` contract
(qipo_client.policy) so evaluation, export parity and the benches call it as they call an artifact or
the server."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from qipo_client.chunking import prefix_inputs
from qipo_client.policy import Noise, PolicyMetadata, as_states, resolve_noise
from torch import Tensor, nn

from training.networks import TwinQ, VelocityNet
from training.paths import ProbabilityPath


class Normalizer(nn.Module):
    """Observation standardisation and action scaling to [−1, 1], stored as buffers (exported in-graph)."""

    obs_mean: Tensor
    obs_std: Tensor
    act_low: Tensor
    act_high: Tensor

    def __init__(self, obs_mean: np.ndarray, obs_std: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.as_tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.as_tensor(np.maximum(obs_std, 1e-3), dtype=torch.float32))
        self.register_buffer("act_low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(high, dtype=torch.float32))

    @property
    def obs_dim(self) -> int:
        return int(self.obs_mean.shape[0])

    @property
    def act_dim(self) -> int:
        return int(self.act_low.shape[0])

    @classmethod
    def fit(cls, observations: np.ndarray, low: np.ndarray, high: np.ndarray) -> Normalizer:
        return cls(observations.mean(0), observations.std(0), low, high)

    def state(self, s: Tensor) -> Tensor:
        return (s - self.obs_mean) / self.obs_std

    def action_to_unit(self, a: Tensor) -> Tensor:
        return 2 * (a - self.act_low) / (self.act_high - self.act_low) - 1

    def action_from_unit(self, x: Tensor) -> Tensor:
        return self.act_low + (x.clamp(-1.0, 1.0) + 1) * 0.5 * (self.act_high - self.act_low)


def repeat_rows(x: Tensor, m: int) -> Tensor:
    """[B, D] → [B·m, D], each row m times in a row (the layout of support sets and best-of-N)."""
    return x.unsqueeze(1).expand(x.shape[0], m, x.shape[-1]).reshape(-1, x.shape[-1])


def solver_times(path: ProbabilityPath, steps: int) -> list[float]:
    """Every time at which the solver evaluates the network, in call order (a dry run on floats)."""
    times: list[float] = []

    def probe(x: Any, t: float) -> Any:
        times.append(t)
        return 0.0

    grid = path.time_grid(steps)
    x: Any = 0.0
    for k in range(steps):
        x = path.step(probe, x, grid[k], grid[k + 1])
    return times


def time_table(net: VelocityNet, times: list[float]) -> dict[float, Tensor]:
    """The time part of the input layer at each solver time, in one batched call, as constants.

    Constants (not traced ops) also make the export exact: Fourier features of t have angles up to a few
    hundred radians, where ONNX Runtime's and torch's sin/cos differ by ~1e-5.
    """
    device = next(net.parameters()).device  # CUDA training samples support sets on the GPU
    with torch.no_grad():
        rows = net.time_features(torch.tensor(times, dtype=torch.float32, device=device)).tolist()
    return {t: torch.tensor([row], device=device) for t, row in zip(times, rows, strict=True)}


Inpainting = Literal["replace", "soft"]
# The default inpainting of chunked exports: measured against "replace" on Pendulum with H = 4 under delay
# (docs/architecture.md, "Action chunks").
DEFAULT_INPAINTING: Inpainting = "soft"


def overlap_weights(committed: Tensor, prefix_len: Tensor, horizon: int, kind: Inpainting) -> Tensor:
    """Per-index weights W [B, H] that pull a new chunk toward the previous chunk's prefix.

    `committed` d and `prefix_len` L are float [B] counts (0 ≤ d ≤ L ≤ H; clamped here). "replace": W = 1 on
    the d committed actions, 0 elsewhere. "soft" (RTC's mask, Black, Galliker & Levine 2025): 1 on the
    committed actions, c·(e^c − 1)/(e − 1) with c = (L − i)/(L − d + 1) over the rest of the prefix (decaying
    toward its end), 0 beyond it.
    """
    index = torch.arange(horizon, dtype=torch.float32, device=committed.device).unsqueeze(0)
    length = prefix_len.reshape(-1, 1).clamp(0.0, float(horizon))
    d = torch.minimum(committed.reshape(-1, 1).clamp_min(0.0), length)
    frozen = (index < d).to(torch.float32)
    if kind == "replace":
        return frozen
    c = (length - index) / (length - d + 1.0)
    decay = c * (torch.exp(c) - 1.0) / (math.e - 1.0)  # expm1 has no ONNX op; c ≤ 1 here
    inside = (index < length).to(torch.float32)
    return frozen + (1.0 - frozen) * inside * decay


def integrate(
    net: nn.Module,
    path: ProbabilityPath,
    s_norm: Tensor,
    noise: Tensor,
    steps: int,
    repeats: int = 1,
    inpaint: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """K solver steps of the path from noise to a unit-box action (unrolled when exported).

    `noise` has `repeats` rows per state (state-major). For a `VelocityNet` the state conditioning is
    computed once per state and the time features once per call for all steps, so a step costs only the
    residual blocks; any other module with the (x, t, s) signature (e.g. the toys' guided mixture) is
    simply called at each evaluation.

    `inpaint` = (y, W), both like `noise`: after each step from t to t' the sample moves toward y noised
    along the path to t' (y_t' = path.interpolate(noise, y, t'), the point the sample's own noise would
    be at if its end point were y), x ← k·x + (1 − k)·y_t' with k = (1 − W)^|t' − t|. W = 1 is replacement
    (the dimension follows the path to y exactly); W = 0 leaves x as it is, bit for bit; between, the pull
    compounds to W over the whole solve whatever the number of steps.
    """
    if isinstance(net, VelocityNet):
        vnet = net
        cond = vnet.condition(s_norm)
        if repeats > 1:
            cond = repeat_rows(cond, repeats)
        table = time_table(vnet, solver_times(path, steps))

        def fn(x: Tensor, t: float) -> Tensor:
            return vnet.velocity_at(x, table[t].to(x.dtype), cond)

    else:
        s_rep = repeat_rows(s_norm, repeats) if repeats > 1 else s_norm

        def fn(x: Tensor, t: float) -> Tensor:
            return net(x, torch.full((1,), t, dtype=x.dtype, device=x.device), s_rep)

    x = noise
    grid = path.time_grid(steps)
    for k in range(steps):
        x = path.step(fn, x, grid[k], grid[k + 1])
        if inpaint is not None:
            target, weight = inpaint
            t_next = torch.full((1,), grid[k + 1], dtype=x.dtype, device=x.device)
            target_t, _ = path.interpolate(noise, target, t_next)
            keep = (1.0 - weight).pow(abs(grid[k + 1] - grid[k]))
            x = keep * x + (1.0 - keep) * target_t
    return x


class FlowPolicy(nn.Module):
    """state [B, S] (raw), noise [B, H·A] → action [B, A] (env units, within bounds), or the chunk
    [B, H, A] of H actions to execute open-loop when `horizon` H > 1 (the flow then transports H·A
    dimensions, and each action of the chunk is mapped back to env units as a single action is).

    `noise_scale` multiplies the source noise inside the graph: 1 samples the policy, 0 takes the action
    its flow carries the noise mean to (the deterministic action, as the peers act with their mean).

    A chunked policy also takes the previous chunk's remaining actions: `forward(state, noise, prefix
    [B, H, A] (env units, index 0 = the next action to execute), committed [B], prefix_len [B])` inpaints
    the new chunk toward them (`integrate`, with `overlap_weights` of kind `inpainting`); a zero
    `prefix_len` gives exactly the chunk without a prefix.
    """

    net: VelocityNet
    normalizer: Normalizer

    candidates = 1  # noise rows per state: the noise input is [B, candidates·H·A]

    def __init__(
        self,
        net: VelocityNet,
        normalizer: Normalizer,
        path: ProbabilityPath,
        steps: int,
        noise_scale: float = 1.0,
        horizon: int = 1,
    ) -> None:
        super().__init__()
        self.net = net
        self.normalizer = normalizer
        self.path = path
        self.steps = steps
        self.noise_scale = noise_scale
        self.horizon = horizon
        self.inpainting: Inpainting = DEFAULT_INPAINTING  # an export option (training/export.py)
        self._rng = np.random.default_rng()  # noise for `infer(states)` without any (pass Seeds to fix it)

    @property
    def chunk_dim(self) -> int:
        """H·A: the dimensions the flow transports per candidate."""
        return self.horizon * self.normalizer.act_dim

    @property
    def noise_dim(self) -> int:
        return self.candidates * self.chunk_dim

    @property
    def metadata(self) -> PolicyMetadata:
        norm = self.normalizer
        return PolicyMetadata(
            name=type(self).__name__,
            obs_dim=norm.obs_dim,
            act_dim=norm.act_dim,
            noise_dim=self.noise_dim,
            action_low=tuple(norm.act_low.tolist()),
            action_high=tuple(norm.act_high.tolist()),
            action_horizon=self.horizon,
        )

    @torch.inference_mode()
    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        """Actions [B, A] (float32, env units) for raw states [B, S]: the `Policy` contract; a chunked
        policy (H > 1) answers [B, H, A]."""
        rows = as_states(states, self.normalizer.obs_dim)
        z = resolve_noise(noise, len(rows), self.noise_dim, self._rng)
        device = self.normalizer.obs_mean.device
        out = self(torch.as_tensor(rows, device=device), torch.as_tensor(z, device=device))
        actions: np.ndarray = out.cpu().numpy()
        return actions

    @torch.inference_mode()
    def infer_inpainted(
        self, states: np.ndarray, prefix: np.ndarray, committed: Any, noise: Noise = None
    ) -> np.ndarray:
        """Chunks [B, H, A] for raw states, inpainted toward `prefix` [B, L, A] (L ≤ H, env units) of
        which the first `committed` (an int or one per row) execute before the new chunk starts."""
        if self.horizon == 1:
            raise ValueError("inpainting needs a chunked policy (action_horizon > 1)")
        rows = as_states(states, self.normalizer.obs_dim)
        z = resolve_noise(noise, len(rows), self.noise_dim, self._rng)
        padded, d, length = prefix_inputs(prefix, committed, len(rows), self.horizon, self.normalizer.act_dim)
        device = self.normalizer.obs_mean.device
        args = (rows, z, padded, d, length)
        out = self(*(torch.as_tensor(a, device=device) for a in args))
        actions: np.ndarray = out.cpu().numpy()
        return actions

    def reset(self) -> None:
        """Stateless: every call stands alone."""

    def inpaint_target(
        self, prefix: Tensor | None, committed: Tensor | None, prefix_len: Tensor | None, repeats: int = 1
    ) -> tuple[Tensor, Tensor] | None:
        """(y, W) [B·repeats, H·A] for `integrate` from the prefix inputs, or None without a prefix."""
        if prefix is None or committed is None or prefix_len is None:
            return None
        h, a = self.horizon, self.normalizer.act_dim
        weight = overlap_weights(committed, prefix_len, h, self.inpainting)
        weight = weight.unsqueeze(-1).expand(weight.shape[0], h, a).reshape(-1, h * a)
        target = self.normalizer.action_to_unit(prefix).reshape(-1, h * a)
        if repeats > 1:
            target, weight = repeat_rows(target, repeats), repeat_rows(weight, repeats)
        return target, weight

    def forward(
        self,
        state: Tensor,
        noise: Tensor,
        prefix: Tensor | None = None,
        committed: Tensor | None = None,
        prefix_len: Tensor | None = None,
    ) -> Tensor:
        if self.noise_scale != 1:  # full-noise models export without the extra op
            noise = self.noise_scale * noise
        inpaint = self.inpaint_target(prefix, committed, prefix_len, repeats=self.candidates)
        return self.to_env(self.sample(self.normalizer.state(state), noise, inpaint))

    def sample(self, s_norm: Tensor, noise: Tensor, inpaint: tuple[Tensor, Tensor] | None) -> Tensor:
        """The unit-box chunk [B, H·A] for normalised states (`integrate`)."""
        return integrate(self.net, self.path, s_norm, noise, self.steps, inpaint=inpaint)

    def to_env(self, x: Tensor) -> Tensor:
        """Unit-box [B, H·A] → env units: [B, A] for H = 1 (the graph as before chunks), else [B, H, A]."""
        if self.horizon > 1:
            x = x.reshape(-1, self.horizon, self.normalizer.act_dim)
        return self.normalizer.action_from_unit(x)


class BestOfNPolicy(FlowPolicy):
    """Best-of-N action selection by Q, exported in one graph with the critic (docs/architecture.md, "QIPO").

    state [B, S], noise [B, N·H·A] (N candidate noises per state, laid out candidate-major within a row)
    → the candidate with the largest min(Q1, Q2), in env units. With N = 1 it equals `FlowPolicy`. For
    H > 1 the candidates are chunks, ranked by the chunk critic Q(s, a_{t:t+H}).
    """

    def __init__(
        self,
        net: VelocityNet,
        normalizer: Normalizer,
        path: ProbabilityPath,
        steps: int,
        q: TwinQ,
        candidates: int,
        horizon: int = 1,
    ) -> None:
        super().__init__(net, normalizer, path, steps, horizon=horizon)
        self.q = q
        self.candidates = candidates

    def sample(self, s_norm: Tensor, noise: Tensor, inpaint: tuple[Tensor, Tensor] | None) -> Tensor:
        n, a_dim = self.candidates, self.chunk_dim
        flat_noise = noise.reshape(-1, a_dim)  # [B·N, H·A], state-major
        x = integrate(self.net, self.path, s_norm, flat_noise, self.steps, repeats=n, inpaint=inpaint)
        x = x.clamp(-1.0, 1.0)
        q = self.q.q_min(repeat_rows(s_norm, n), x).reshape(-1, n)
        best = q.argmax(dim=-1, keepdim=True)  # [B, 1]
        index = best.unsqueeze(-1).expand(best.shape[0], 1, a_dim)
        return torch.gather(x.reshape(-1, n, a_dim), 1, index).reshape(-1, a_dim)
