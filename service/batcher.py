"""Dynamic micro-batching of `/act` (Triton's vocabulary: max batch size, max queue delay, queue timeout).

Each request's whole K-step ODE trajectory runs inside one ONNX call (the fused sampler), so batching is
just stacking the states of every request that is waiting and calling the session once.

When to flush: at the end of the event-loop tick in which a request arrived, with no fixed wait. Every
request whose handler ran in the same tick joins the batch; while a batch computes, the next one fills by
itself. A fixed wait cannot fill a batch at low load and only adds latency (a 1 ms wait cost a single client
more than half its throughput), so `max_queue_delay_ms` defaults to 0 and exists for GPUs, where a bigger
batch is nearly free.

With the inline executor the first request of a tick leads: it yields once (`asyncio.sleep(0)`, the same
one pass a scheduled flush would wait) and then runs the flush itself, so its own answer needs no future
and no second wake-up; the others of the tick get theirs through their futures.

One client at a time does not even need that pass: after `SOLO_AFTER` flushes in a row that each held one
request, a request arriving at an idle batcher is flushed on the spot ("solo"). A solo flush marks the loop
pass with its task (cleared by a `call_soon`); a request of another task that arrives in the same pass sees
the mark, so clients are concurrent: it resets the count and leads, and the rest of the pass joins it, as
before. The marking task itself may flush solo again in that pass (its next request could not have joined:
it waited for the first). A flush of more than one request resets the count too. So under load, even light
load, batching is what it was; one client pays one ONNX call per request and no extra loop pass.

Where the ONNX call runs (`executor`): "inline" (default) runs it on the event loop; "thread" hands the
batch to one worker thread, so the loop keeps reading requests while ONNX Runtime (which releases the GIL)
computes, with at most one batch in flight. On 2 CPU cores the two cost the same server CPU per request
within the run-to-run noise (docs/bench/serve.md), so the default is the one with fewer moving parts;
"thread" is for a GPU or a model whose call is long enough that stalling the loop for it hurts.

Rows are independent in the graph and ONNX Runtime's CPU kernels give bit-identical rows whatever the batch,
so a request gets the same action for the same seed alone or batched (tested). The batcher knows models only
through the `Policy` contract (`qipo_client.policy`: `infer(states, noise)` gives bounded actions, and the
rows at a bound of `metadata` are flagged `clipped`); the seed-to-noise rule is the contract's
`seeded_noise`, the one a robot's `seed` and `training.eval` use too.

Robot safety lives here too: a request whose deadline cannot be met is answered "no action" (504) before
any compute is spent on it, and an action finished after its deadline is never sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from starlette import status as http

from service.chunks import PrefixInputs
from service.metrics import Metrics
from service.policy import Policy, PolicyMetadata, PrefixPolicy, at_bound, seeded_noise
from service.settings import Executor

log = logging.getLogger(__name__)

SOLO_AFTER = 2  # one-request flushes in a row (no second request seen in their pass) before solo flushes
NOISE_POOL_ROWS = 4096
_EMPTY = np.empty((0, 0), dtype=np.float32)
# actions [B, A] (chunks [B, H, A]), saturated [B] (per action [B, H]), infer seconds
_Outcome = tuple[np.ndarray, np.ndarray, float]


class BatchError(Exception):
    """A request the batcher answers without an action; `status` is the HTTP status to send."""

    status = http.HTTP_503_SERVICE_UNAVAILABLE
    retry_after: str | None = "1"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class DeadlineExceeded(BatchError):
    status = http.HTTP_504_GATEWAY_TIMEOUT
    retry_after = None


class Overloaded(BatchError):
    status = http.HTTP_503_SERVICE_UNAVAILABLE


@dataclass(frozen=True)
class BatchConfig:
    max_batch_size: int = 256
    max_queue_delay_ms: float = 0.0
    queue_timeout_ms: float = 1000.0
    max_queue_rows: int = 4096
    executor: Executor = "inline"


@dataclass(slots=True)  # not frozen: a frozen dataclass pays object.__setattr__ per field, per request
class ActResult:
    actions: np.ndarray  # [n, A] float32 (chunks [n, H, A]), inside the bounds
    saturated: np.ndarray  # [n] bool: a row at (or clipped to) a bound; [n, H] per action of a chunk
    queue_s: float
    infer_s: float
    batch_rows: int


@dataclass(slots=True)
class _Item:
    policy: Policy
    states: np.ndarray  # [n, obs_dim] float32
    seed: int | None
    future: asyncio.Future[ActResult]
    enqueued: float
    deadline: float | None  # perf_counter seconds
    rows: int = field(default=0)
    prefix: PrefixInputs | None = None  # a chunked model's inpainting inputs, when the request sent a prefix
    started: float = field(default=0.0)


class MicroBatcher:
    """Collects requests per event-loop tick and runs them as one ONNX call per model."""

    def __init__(self, config: BatchConfig, metrics: Metrics, seed: int = 0) -> None:
        self.config = config
        self.metrics = metrics
        self.rng = np.random.default_rng(seed)
        self._pending: deque[_Item] = deque()
        self.submitted = 0  # requests accepted into the queue since start
        self._pending_rows = 0
        self._scheduled = False
        self._busy = False
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Seconds per ONNX call, smoothed: how long a request still needs once it leaves the queue.
        self._infer_estimate: dict[int, float] = {}
        self._singles = 0  # one-request flushes in a row; from SOLO_AFTER on, a lone request flushes at once
        self._marked: asyncio.Task[object] | None = None  # the task of this loop pass's solo flush, if any
        # Unseeded noise: one draw of NOISE_POOL_ROWS rows, handed out in slices (width -> (pool, next row)).
        self._noise_pool: dict[int, tuple[np.ndarray, int]] = {}

    # ----- public -------------------------------------------------------------------------------------
    async def submit(
        self,
        policy: Policy,
        states: np.ndarray,
        seed: int | None,
        deadline: float | None = None,
        prefix: PrefixInputs | None = None,
    ) -> ActResult:
        """Queue `states` (float32 [n, obs_dim], already validated) for `policy`; resolves with bounded
        actions (chunks for H > 1) or raises BatchError. `deadline` is absolute, in `time.perf_counter()`
        seconds. `prefix`: a chunked model's inpainting inputs for these rows (checked by service.chunks);
        a batch that mixes requests with and without one gives the others prefix_len 0.
        """
        if self._closing:
            raise Overloaded("server is shutting down; send the request to another replica")
        n = len(states)
        if self._pending_rows + n > self.config.max_queue_rows:
            raise Overloaded(
                f"queue is full ({self._pending_rows} rows waiting, "
                f"limit {self.config.max_queue_rows}); retry"
            )
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        item = _Item(
            policy, states, seed, loop.create_future(), time.perf_counter(), deadline, n, prefix=prefix
        )
        self._pending.append(item)
        self.submitted += 1
        self._pending_rows += n
        self._idle.clear()
        if self._scheduled or self._busy:
            return await item.future  # a flush is coming (or computing) and will take this item
        if self.config.executor == "inline" and self.config.max_queue_delay_ms <= 0:
            marked = self._marked
            if marked is not None and marked is not asyncio.current_task(loop):
                self._singles = 0  # a second client in the pass of a solo flush: batch again
                await self._lead()
            elif self._singles >= SOLO_AFTER:
                if marked is None:
                    self._marked = asyncio.current_task(loop)
                    loop.call_soon(self._unmark)
                self._flush()  # alone in an idle batcher: no loop pass to wait for
            else:
                await self._lead()
        else:
            self._schedule()
        return await item.future  # done already when this request led its own flush

    def _unmark(self) -> None:
        self._marked = None

    async def _lead(self) -> None:
        """Yield once so the rest of this tick can queue, then flush on this task (inline executor)."""
        self._scheduled = True
        try:
            await asyncio.sleep(0)
        except BaseException:  # cancelled while yielding: hand the flush to the loop
            self._scheduled = False
            self._schedule()
            raise
        self._flush()

    async def drain(self, timeout: float = 10.0) -> bool:
        """Refuse new work, finish everything queued or computing; True if it finished in time."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            log.warning("drain timed out", extra={"pending": len(self._pending)})
            return False
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)

    @property
    def queue_rows(self) -> int:
        return self._pending_rows

    # ----- scheduling ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled and not self._busy and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            self._maybe_idle()
            return
        cfg = self.config
        now = time.perf_counter()
        if cfg.max_queue_delay_ms > 0 and self._pending_rows < cfg.max_batch_size:
            wait = self._pending[0].enqueued + cfg.max_queue_delay_ms / 1e3 - now
            if wait > 0:
                assert self._loop is not None
                self._scheduled = True
                self._loop.call_later(wait, self._flush)
                return
        batch = self._take(now)
        if not batch:
            self._maybe_idle()
            if self._pending:
                self._schedule()
            return
        if cfg.executor == "thread":
            self._busy = True
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qipo-onnx")
            future = self._pool.submit(self._compute, batch)
            future.add_done_callback(lambda f: self._from_thread(batch, f))
            return
        self._finish(batch, self._run(batch))
        if self._pending:
            self._schedule()
        else:
            self._maybe_idle()

    def _from_thread(self, batch: list[_Item], future: concurrent.futures.Future[_Outcome]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._thread_done, batch, future)

    def _thread_done(self, batch: list[_Item], future: concurrent.futures.Future[_Outcome]) -> None:
        self._busy = False
        exc = future.exception()
        self._finish(batch, exc if exc is not None else future.result())
        if self._pending:
            self._schedule()
        else:
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._pending and not self._busy:
            self._idle.set()

    def _take(self, now: float) -> list[_Item]:
        """Pop up to max_batch_size rows for the model of the oldest request; shed what cannot make it."""
        cfg = self.config
        policy = self._pending[0].policy
        batch: list[_Item] = []
        rows = 0
        kept: deque[_Item] = deque()
        timeout = cfg.queue_timeout_ms / 1e3
        while self._pending:
            item = self._pending.popleft()
            n = item.rows
            if item.future.done():  # caller went away (disconnect / cancelled)
                self._pending_rows -= n
                continue
            if now - item.enqueued > timeout:
                self._pending_rows -= n
                self._reject(
                    item, Overloaded(f"waited over queue_timeout_ms={cfg.queue_timeout_ms:g} in the queue")
                )
                continue
            if item.policy is not policy or (batch and rows + n > cfg.max_batch_size):
                kept.append(item)
                continue
            if item.deadline is not None and now + self._estimate(policy) > item.deadline:
                self._pending_rows -= n
                self.metrics.deadline_exceeded.inc()
                late = (now - item.deadline) * 1e3
                self._reject(
                    item,
                    DeadlineExceeded(
                        f"deadline cannot be met: {max(late, 0.0):.2f} ms past it or too close for the "
                        f"~{self._estimate(policy) * 1e3:.2f} ms computation; no action sent"
                    ),
                )
                continue
            self._pending_rows -= n
            item.started = now
            batch.append(item)
            rows += n
        self._pending = kept
        return batch

    def _estimate(self, policy: Policy) -> float:
        return self._infer_estimate.get(id(policy), 0.0)

    def _reject(self, item: _Item, error: BatchError) -> None:
        if not item.future.done():
            item.future.set_exception(error)

    # ----- compute ------------------------------------------------------------------------------------
    def _noise(self, batch: list[_Item], width: int, total: int) -> np.ndarray:
        """Seeded requests get `seeded_noise(seed, ...)` (reproducible, as in training.eval); the rest share
        one draw from the server's generator."""
        if (len(batch) == 1 and batch[0].seed is None) or all(item.seed is None for item in batch):
            return self._unseeded(total, width)
        noise = np.empty((total, width), dtype=np.float32)
        unseeded = sum(item.rows for item in batch if item.seed is None)
        shared = self._unseeded(unseeded, width)
        start = used = 0
        for item in batch:
            n = item.rows
            if item.seed is None:
                noise[start : start + n] = shared[used : used + n]
                used += n
            else:
                noise[start : start + n] = seeded_noise(item.seed, n, width)
            start += n
        return noise

    def _unseeded(self, rows: int, width: int) -> np.ndarray:
        """`rows` rows of the server generator's noise: a slice of a pre-drawn pool (a draw per flush costs
        more than the slice), refilled when it runs out. Read-only: the policy only reads its noise."""
        pool, start = self._noise_pool.get(width, (_EMPTY, 0))
        if start + rows > len(pool):
            pool = self.rng.standard_normal((max(NOISE_POOL_ROWS, rows), width), dtype=np.float32)
            pool.flags.writeable = False
            start = 0
        self._noise_pool[width] = (pool, start + rows)
        return pool[start : start + rows]

    def _run(self, batch: list[_Item]) -> _Outcome | BaseException:
        try:
            return self._compute(batch)
        except Exception as exc:  # a broken session must fail these requests, not the event loop
            return exc

    def _compute(self, batch: list[_Item]) -> _Outcome:
        policy = batch[0].policy
        states = batch[0].states if len(batch) == 1 else np.concatenate([item.states for item in batch])
        meta = policy.metadata
        noise = self._noise(batch, meta.noise_width, len(states))
        prefix = _prefixes(batch, meta, len(states))
        start = time.perf_counter()
        if prefix is None:
            actions = policy.infer(states, noise)
        elif isinstance(policy, PrefixPolicy):
            actions = policy.infer_prefixed(states, noise, prefix.prefix, prefix.committed, prefix.prefix_len)
        else:
            raise TypeError(f"{type(policy).__name__} cannot inpaint a chunk (no infer_prefixed)")
        return actions, _saturated(actions, meta), time.perf_counter() - start

    def _finish(
        self, batch: list[_Item], outcome: tuple[np.ndarray, np.ndarray, float] | BaseException
    ) -> None:
        if isinstance(outcome, BaseException):
            log.error("onnx call failed", extra={"error": str(outcome), "requests": len(batch)})
            for item in batch:
                self._reject(item, BatchError(f"inference failed: {outcome}"))
            return
        actions, saturated, infer = outcome
        policy = batch[0].policy
        key = id(policy)
        old = self._infer_estimate.get(key)
        self._infer_estimate[key] = infer if old is None else 0.8 * old + 0.2 * infer
        rows = len(actions)
        self._singles = self._singles + 1 if len(batch) == 1 else 0
        m = self.metrics
        m.batch_size.observe(rows)
        now = time.perf_counter()
        start = 0
        for item in batch:
            n = item.rows
            m.queue_wait.observe(item.started - item.enqueued)
            if item.future.done():
                start += n
                continue
            if item.deadline is not None and now > item.deadline:
                m.deadline_exceeded.inc()
                item.future.set_exception(
                    DeadlineExceeded(
                        f"action ready {(now - item.deadline) * 1e3:.2f} ms after the deadline; not sent"
                    )
                )
            else:
                item.future.set_result(
                    ActResult(
                        actions=actions[start : start + n],
                        saturated=saturated[start : start + n],
                        queue_s=item.started - item.enqueued,
                        infer_s=infer,
                        batch_rows=rows,
                    )
                )
            start += n
        if clipped := int(np.count_nonzero(saturated)):
            m.clipped.inc(clipped)


def _prefixes(batch: list[_Item], meta: PolicyMetadata, rows: int) -> PrefixInputs | None:
    """The batch's inpainting inputs, or None when no request of it sent a prefix (then the graph gets
    prefix_len 0 everywhere); rows of requests without one get prefix_len 0."""
    if len(batch) == 1 or all(item.prefix is None for item in batch):
        return batch[0].prefix if len(batch) == 1 else None
    horizon, act_dim = meta.action_horizon, meta.act_dim
    out = PrefixInputs(
        np.zeros((rows, horizon, act_dim), dtype=np.float32),
        np.zeros(rows, dtype=np.float32),
        np.zeros(rows, dtype=np.float32),
    )
    start = 0
    for item in batch:
        if item.prefix is not None:
            end = start + item.rows
            out.prefix[start:end] = item.prefix.prefix
            out.committed[start:end] = item.prefix.committed
            out.prefix_len[start:end] = item.prefix.prefix_len
        start += item.rows
    return out


def _saturated(actions: np.ndarray, meta: PolicyMetadata) -> np.ndarray:
    """bool [B] (rows at a bound), or [B, H] for chunks: bounds apply per action."""
    if actions.ndim == 2:
        return at_bound(actions, meta.action_low, meta.action_high)
    flat = at_bound(actions.reshape(-1, actions.shape[-1]), meta.action_low, meta.action_high)
    return flat.reshape(actions.shape[:2])
