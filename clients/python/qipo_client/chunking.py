"""Executing action chunks in real time: `ChunkedController`, one action per control period from a queue.

A chunked policy (`metadata.action_horizon` H > 1) answers H actions per call. `ChunkedController.step(state)`
returns the action for this control step: it replays the queue of planned actions and asks for the next
chunk when the queue runs low. The controller counts in control steps: the request made at step k sends the
state read at step k, and index i of the chunk it gets back is the action for step k + i.

Synchronous use (no `runner`): the call blocks, the robot waits for it, and a chunk is requested when the
queue is empty: the open-loop replay openpi's `ActionChunkBroker` does, and, with H = 1, exactly a
`policy.infer` per step.

Real-time use (a `runner`, e.g. `ThreadRunner`): the request runs while the queue keeps playing. The
latency of recent replies (`LatencyEstimator`) says how many control steps d a reply takes; the request
carries the queue's remaining actions as the `prefix` (index 0 = the action for step k) of which the first d
are *committed*: they execute whatever the reply says. A policy that can inpaint (`InpaintingPolicy`,
e.g. an exported chunked artifact) conditions the new chunk on that prefix, so the chunk continues the
motion instead of jumping to another mode at the switch (real-time chunking, Black, Galliker & Levine 2025).
When the reply arrives the controller switches at index j = max(steps elapsed, d): the committed actions
still queued stay, everything after them comes from the new chunk. A committed action is never replaced.

Everything that depends on time is injected (`clock`, `runner`), so a test drives the controller with a
fake clock and `SimulatedDelay`, a runner that answers a synchronous policy d control steps later.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Union, runtime_checkable

import numpy as np

from qipo_client.policy import Noise, Policy

Clock = Callable[[], float]


@runtime_checkable
class InpaintingPolicy(Policy, Protocol):
    """A chunked `Policy` that conditions a new chunk on the previous chunk's remaining actions."""

    def infer_inpainted(
        self, states: np.ndarray, prefix: np.ndarray, committed: Any, noise: Noise = None
    ) -> np.ndarray:
        """Chunks [B, H, A] for `states`, inpainted toward `prefix` [B, L, A] (L ≤ H, env units, index 0 =
        the next action to execute), of which the first `committed` d (an int, or one per row; d < H)
        execute before the new chunk starts."""
        ...


def prefix_inputs(
    prefix: Any, committed: Any, rows: int, horizon: int, act_dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph inputs of an inpainting request: (prefix [rows, H, A] padded with zeros, committed [rows],
    prefix_len [rows]), float32; a ValueError that names the problem otherwise.

    `prefix` is [rows, L, A] (or [L, A] for one row), L ≤ H; `committed` an int or one per row, with
    0 ≤ d ≤ L and d < H.
    """
    arr = np.asarray(prefix, dtype=np.float32)
    if arr.ndim == 2 and rows == 1:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != rows or arr.shape[2] != act_dim or arr.shape[1] > horizon:
        raise ValueError(
            f"prefix has shape {arr.shape}; this policy needs [{rows}, L, {act_dim}] with L ≤ {horizon}"
        )
    if not bool(np.isfinite(arr).all()):
        raise ValueError("prefix holds NaN or Inf")
    length = arr.shape[1]
    d = np.broadcast_to(np.asarray(committed), (rows,))
    if not np.issubdtype(d.dtype, np.integer) or bool((d < 0).any()) or bool((d > length).any()):
        raise ValueError(f"committed must be whole numbers in [0, {length}] (the prefix's length)")
    if bool((d >= horizon).any()):
        raise ValueError(f"committed must be below the action horizon {horizon}")
    padded = np.zeros((rows, horizon, act_dim), dtype=np.float32)
    padded[:, :length] = arr
    return padded, d.astype(np.float32), np.full(rows, length, dtype=np.float32)


class LatencyEstimator:
    """Reply latency from recent replies: the larger of an EWMA and a high quantile of the last `window`,
    so one slow reply raises the estimate at once and it falls back as fast replies come in."""

    def __init__(
        self, alpha: float = 0.3, window: int = 20, quantile: float = 0.9, initial_s: float = 0.0
    ) -> None:
        if not 0 < alpha <= 1 or not 0 <= quantile <= 1 or window < 1:
            raise ValueError("alpha in (0, 1], quantile in [0, 1] and window ≥ 1 are needed")
        self.alpha, self.quantile = alpha, quantile
        self.recent: deque[float] = deque(maxlen=window)
        self.ewma = initial_s

    def observe(self, seconds: float) -> None:
        self.ewma = seconds if not self.recent else self.ewma + self.alpha * (seconds - self.ewma)
        self.recent.append(seconds)

    @property
    def seconds(self) -> float:
        if not self.recent:
            return self.ewma
        return max(self.ewma, float(np.quantile(np.asarray(self.recent), self.quantile)))

    def steps(self, period_s: float) -> int:
        """Control steps a reply takes: the steps that start before it arrives (1e-9 s of slack, so a
        latency of exactly two periods is two steps)."""
        return max(0, math.ceil(self.seconds / period_s - 1e-9))


class Pending(Protocol):
    """A request in flight."""

    def done(self) -> bool: ...

    def result(self) -> np.ndarray:
        """The reply, waiting for it if need be."""
        ...

    @property
    def latency_s(self) -> float:
        """Seconds from submission to the reply (valid once `done`)."""
        ...


class Runner(Protocol):
    """Runs a policy call away from the control loop."""

    def submit(self, call: Callable[[], np.ndarray]) -> Pending: ...


class _Done:
    def __init__(self, value: np.ndarray, latency_s: float, ready: Callable[[], bool]) -> None:
        self.value, self.latency_s, self._ready = value, latency_s, ready

    def done(self) -> bool:
        return self._ready()

    def result(self) -> np.ndarray:
        return self.value


class SimulatedDelay:
    """A runner that calls the policy at once but makes the reply available `steps` control periods later
    on `clock`: a deterministic stand-in for network and inference delay (tests, benchmarks). A `result()`
    asked for before then answers at once, as if the robot had waited."""

    def __init__(self, steps: int, period_s: float, clock: Clock) -> None:
        if steps < 0 or period_s <= 0:
            raise ValueError("steps ≥ 0 and period_s > 0 are needed")
        self.steps, self.period_s, self.clock = steps, period_s, clock

    def submit(self, call: Callable[[], np.ndarray]) -> Pending:
        latency = self.steps * self.period_s
        ready_at = self.clock() + latency - 1e-9
        return _Done(call(), latency, lambda: self.clock() >= ready_at)


class _Future:
    def __init__(self, future: Future[tuple[np.ndarray, float]]) -> None:
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> np.ndarray:
        return self.future.result()[0]

    @property
    def latency_s(self) -> float:
        return self.future.result()[1]


class ThreadRunner:
    """Runs each call on one worker thread (the controller keeps one request in flight)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qipo-chunk")

    def submit(self, call: Callable[[], np.ndarray]) -> Pending:
        start = self.clock()

        def timed() -> tuple[np.ndarray, float]:
            value = call()
            return value, self.clock() - start

        return _Future(self.pool.submit(timed))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Switch:
    """One reply taken into the queue: what was asked, and where the new chunk took over."""

    request_step: int  # the control step whose state the request carried (chunk index 0)
    committed: int  # d sent with the request
    prefix: np.ndarray  # [L, A] the queue's actions sent with it (index 0 = step request_step)
    chunk: np.ndarray  # [H, A] the reply
    index: int  # the chunk index that took over: its action runs at request_step + index
    latency_s: float
    inpainted: bool  # the prefix went to the policy (it can inpaint and there was one)

    @property
    def switch_step(self) -> int:
        return self.request_step + self.index


@dataclass
class _Request:
    step: int
    committed: int
    prefix: np.ndarray
    reply: Pending
    inpainted: bool


class ChunkedController:
    """One action per control step from a queue of chunk actions (module docstring).

    `period_s`: seconds per control step (default the policy's `control_period_s`; a real-time `runner`
    needs one). `execute_steps` s: actions executed from each chunk before the next is requested (default H
    synchronously, H // 2 in real time); the request goes out earlier when the estimated latency would
    otherwise empty the queue. `inpaint`: send the prefix to a policy that can use it. `noise(step)`: the
    noise of the request made at a control step (None: the policy draws its own).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        period_s: Optional[float] = None,
        runner: Optional[Runner] = None,
        execute_steps: Optional[int] = None,
        inpaint: bool = True,
        latency: Optional[LatencyEstimator] = None,
        noise: Optional[Callable[[int], Noise]] = None,
        clock: Clock = time.monotonic,
        history: int = 100,
    ) -> None:
        meta = policy.metadata
        self.policy, self.runner, self.clock, self.noise = policy, runner, clock, noise
        self.horizon, self.act_dim = meta.action_horizon, meta.act_dim
        self.period_s = period_s if period_s is not None else meta.control_period_s
        if runner is not None and not self.period_s:
            raise ValueError(
                "real-time execution needs the control period: pass period_s (the policy's manifest records "
                "none)"
            )
        default_s = self.horizon if runner is None else max(1, self.horizon // 2)
        self.execute_steps = default_s if execute_steps is None else execute_steps
        if not 1 <= self.execute_steps <= self.horizon:
            raise ValueError(f"execute_steps must be in [1, {self.horizon}] (the action horizon)")
        self.inpaint = inpaint and self.horizon > 1 and isinstance(policy, InpaintingPolicy)
        self.latency = latency or LatencyEstimator()
        self.switches: deque[Switch] = deque(maxlen=history)
        self.starved = 0  # steps that waited for a reply (the queue ran dry)
        self.late = 0  # replies whose every action was already due (only H = 1 in real time)
        self._step = 0
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._pending: Optional[_Request] = None

    @property
    def step_index(self) -> int:
        """The control step the next `step` call acts for."""
        return self._step

    @property
    def queued(self) -> int:
        return len(self._queue)

    def latency_steps(self) -> int:
        """d: control steps the next reply is expected to take (0 when the robot waits for it)."""
        if self.runner is None or not self.period_s:
            return 0
        return self.latency.steps(self.period_s)

    def step(self, state: Any) -> np.ndarray:
        """The action [A] to apply at this control step for the state just read."""
        k = self._step
        self._collect(k, wait=False)
        if self._pending is None and len(self._queue) <= self._refill_at():
            self._request(np.array(state, dtype=np.float32).reshape(1, -1), k)
            self._collect(k, wait=False)
        if not self._queue:
            self.starved += 1
            self._collect(k, wait=True)
        queued_step, action = self._queue.popleft()
        assert queued_step == k, "the queue is indexed by control step"
        self._step += 1
        out: np.ndarray = action.copy()
        return out

    def reset(self) -> None:
        """A new episode: drop the queue and any reply in flight (the latency estimate is kept)."""
        self._queue.clear()
        self._pending = None
        self._step = 0
        self.policy.reset()

    def run(
        self,
        read_state: Callable[[], Any],
        apply: Callable[[np.ndarray], Any],
        steps: int,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        """`steps` control steps at the period: read, act, apply, then sleep out the rest of the period."""
        if not self.period_s:
            raise ValueError("run() needs the control period: pass period_s")
        next_tick = self.clock()
        for _ in range(steps):
            apply(self.step(read_state()))
            next_tick += self.period_s
            wait = next_tick - self.clock()
            if wait > 0:
                sleep(wait)

    def _refill_at(self) -> int:
        """Request the next chunk when at most this many actions are queued: after `execute_steps`, or
        earlier when the queue holds no more than the d actions that run until the reply is in."""
        return max(self.horizon - self.execute_steps, min(self.latency_steps(), self.horizon - 1))

    def _request(self, state: np.ndarray, k: int) -> None:
        prefix = np.array([a for _, a in list(self._queue)[: self.horizon]], dtype=np.float32)
        prefix = prefix.reshape(-1, self.act_dim)
        committed = min(self.latency_steps(), len(prefix), self.horizon - 1)
        noise = self.noise(k) if self.noise is not None else None
        inpainted = self.inpaint and len(prefix) > 0
        call: Callable[[], np.ndarray]
        if inpainted:
            policy: Any = self.policy

            def call() -> np.ndarray:
                out: np.ndarray = policy.infer_inpainted(state, prefix[None], committed, noise)
                return out

        else:

            def call() -> np.ndarray:
                return self.policy.infer(state, noise)

        if self.runner is None:
            start = self.clock()
            value = call()
            reply: Pending = _Done(value, self.clock() - start, lambda: True)
        else:
            reply = self.runner.submit(call)
        self._pending = _Request(k, committed, prefix, reply, inpainted)

    def _collect(self, k: int, wait: bool) -> None:
        """Take a finished reply (or, with `wait`, the one in flight) into the queue."""
        request = self._pending
        if request is None or not (wait or request.reply.done()):
            return
        self._pending = None
        chunk = np.asarray(request.reply.result(), dtype=np.float32).reshape(self.horizon, self.act_dim)
        self.latency.observe(request.reply.latency_s)
        elapsed = k - request.step
        index = max(elapsed, request.committed)
        if index >= self.horizon:  # every action of the reply is due already: take its last one now
            self.late += 1
            self._queue = deque([(k, chunk[-1])])
            index = self.horizon - 1
        else:
            start = request.step + index
            kept = [(s, a) for s, a in self._queue if s < start]  # the committed actions still to run
            new = [(request.step + i, chunk[i]) for i in range(index, self.horizon)]
            self._queue = deque(kept + new)
        self.switches.append(
            Switch(
                request.step,
                request.committed,
                request.prefix,
                chunk,
                index,
                request.reply.latency_s,
                request.inpainted,
            )
        )


def executed_jerk(actions: Sequence[np.ndarray], boundaries: Sequence[int]) -> dict[str, Union[float, int]]:
    """Mean |a_{t+1} − a_t| (L2 over the action) at the given switch steps (t + 1 = a switch step) and
    at every other step: how much a chunk boundary jumps against the motion inside a chunk."""
    arr = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
    if len(arr) < 2:
        return {"boundary": float("nan"), "inside": float("nan"), "boundaries": 0}
    jumps = np.linalg.norm(np.diff(arr, axis=0), axis=1)  # jumps[t] = |a_{t+1} − a_t|
    at = np.zeros(len(jumps), dtype=bool)
    for step in boundaries:
        if 1 <= step < len(arr):
            at[step - 1] = True
    boundary = float(jumps[at].mean()) if at.any() else float("nan")
    inside = float(jumps[~at].mean()) if (~at).any() else float("nan")
    return {"boundary": boundary, "inside": inside, "boundaries": int(at.sum())}
