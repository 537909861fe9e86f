"""MicroBatcher with a real ONNX Runtime session (no HTTP): joining, splitting, seeds, deadlines, drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

import numpy as np
import pytest

from service.batcher import SOLO_AFTER, BatchConfig, DeadlineExceeded, MicroBatcher, Overloaded
from service.metrics import Metrics
from service.runtime import OnnxPolicy


@pytest.fixture(scope="module")
def policy(serve_artifact: Path) -> OnnxPolicy:
    return OnnxPolicy.load(serve_artifact)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)


def calls(metrics: Metrics) -> tuple[float, float]:
    """(ONNX calls, rows) seen by the batch-size histogram."""
    return metrics.batch_size.count, metrics.batch_size.sum


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_one_tick_is_one_onnx_call_and_rows_equal_alone(policy: OnnxPolicy, executor: str) -> None:
    metrics = Metrics()
    batcher = MicroBatcher(BatchConfig(executor=executor), metrics)  # type: ignore[arg-type]
    states = rows(20)

    async def go() -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float]]]:
        seen = []
        for _ in range(2):
            together = await asyncio.gather(
                *(batcher.submit(policy, s[None], seed=i) for i, s in enumerate(states))
            )
            seen.append(calls(metrics))
        alone = [await batcher.submit(policy, s[None], seed=i) for i, s in enumerate(states)]
        return [r.actions for r in together], [r.actions for r in alone], seen

    together, alone, seen = asyncio.run(go())
    assert seen == [(1, 20), (2, 40)]
    assert calls(metrics) == (2 + 20, 60)
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    expected = policy.infer(states[3:4], np.random.default_rng(3).standard_normal((1, 1), dtype=np.float32))
    np.testing.assert_array_equal(together[3], expected)


def test_one_client_at_a_time_is_flushed_without_a_loop_pass(policy: OnnxPolicy) -> None:
    """Inline executor: after SOLO_AFTER one-request flushes, a request at an idle batcher is answered
    without yielding to the loop (a callback scheduled before it has not run when it returns). A second
    client in the pass of such a flush, or a batch of several, brings the leader's one yield back, so the
    requests of a pass can still join one call."""
    metrics = Metrics()
    batcher = MicroBatcher(BatchConfig(), metrics)

    async def yielded_during(submit: Awaitable[object]) -> bool:
        ran: list[bool] = []
        asyncio.get_running_loop().call_soon(ran.append, True)
        await submit
        return bool(ran)

    async def one() -> bool:
        await asyncio.sleep(0)  # the next loop pass, as the next request of a client over a socket
        return await yielded_during(batcher.submit(policy, rows(1), None))

    async def go() -> list[bool]:
        out = [await one() for _ in range(SOLO_AFTER + 2)]  # lead, lead, then at once
        # The same task again in the same pass (its next request waited for the last): still at once.
        out.append(await yielded_during(batcher.submit(policy, rows(1), None)))
        # Two clients in one pass: the first flushes at once, the second leads; the count starts over.
        await asyncio.sleep(0)
        await asyncio.gather(*(batcher.submit(policy, rows(1, i), None) for i in range(2)))
        out += [await one() for _ in range(SOLO_AFTER + 1)]
        # A batch of several resets it too.
        await asyncio.gather(*(batcher.submit(policy, rows(1, i), None) for i in range(4)))
        out += [await one() for _ in range(SOLO_AFTER + 1)]
        return out

    lead, solo = True, False
    assert asyncio.run(go()) == [
        *[lead] * SOLO_AFTER,
        solo,
        solo,
        solo,
        *[lead] * (SOLO_AFTER - 1),  # the pass's second client already led one flush of one request
        solo,
        solo,
        *[lead] * SOLO_AFTER,
        solo,
    ]


def test_max_batch_size_splits_without_breaking_a_request(policy: OnnxPolicy) -> None:
    metrics = Metrics()
    batcher = MicroBatcher(BatchConfig(max_batch_size=8), metrics)

    async def go() -> list[int]:
        replies = await asyncio.gather(*(batcher.submit(policy, rows(3, i), None) for i in range(6)))
        big = await batcher.submit(policy, rows(20), None)  # one request over the limit still runs whole
        return [r.batch_rows for r in replies] + [big.batch_rows]

    sizes = asyncio.run(go())
    assert max(sizes[:-1]) <= 8 and sizes[-1] == 20
    assert calls(metrics)[1] == 6 * 3 + 20


def test_deadline_past_or_too_close_is_refused_before_compute(policy: OnnxPolicy) -> None:
    metrics = Metrics()
    batcher = MicroBatcher(BatchConfig(), metrics)

    async def go() -> None:
        await batcher.submit(policy, rows(1), None)  # learn the compute time
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(policy, rows(1), None, deadline=time.perf_counter() - 0.001)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(policy, rows(1), None, deadline=time.perf_counter() + 1e-7)
        ok = await batcher.submit(policy, rows(1), None, deadline=time.perf_counter() + 5.0)
        assert ok.actions.shape == (1, 1)

    asyncio.run(go())
    assert calls(metrics)[0] == 2  # the refused requests cost no ONNX call
    assert metrics.deadline_exceeded.value == 2


def test_full_queue_and_queue_timeout_answer_503(policy: OnnxPolicy) -> None:
    """Two batchers, so a slow box cannot time out the request the queue-full check needs (a 1 ms timeout
    used to do that under load); the timeout case blocks the loop for 40× its queue_timeout_ms."""
    full = MicroBatcher(BatchConfig(max_queue_rows=10), Metrics())
    timing = MicroBatcher(BatchConfig(queue_timeout_ms=5.0), Metrics())

    async def go() -> None:
        # Two requests in one loop pass: the second waits in the queue (behind the first's flush or
        # joining it) until the next pass.
        before = asyncio.ensure_future(full.submit(policy, rows(1), None))
        first = asyncio.ensure_future(full.submit(policy, rows(8), None))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue is full"):
            await full.submit(policy, rows(4), None)
        await before
        await first

        other = asyncio.ensure_future(timing.submit(policy, rows(1), None))
        late = asyncio.ensure_future(timing.submit(policy, rows(1), None))
        await asyncio.sleep(0)  # both are in the batcher; `late` is still queued
        time.sleep(0.2)  # block the loop: `late` waits past queue_timeout_ms before its flush
        with pytest.raises(Overloaded, match="queue_timeout_ms"):
            await late
        await asyncio.gather(other, return_exceptions=True)  # flushed at once, or timed out with `late`

    asyncio.run(go())


def test_drain_finishes_queued_work_and_refuses_new(policy: OnnxPolicy) -> None:
    batcher = MicroBatcher(BatchConfig(executor="thread", max_batch_size=4), Metrics())

    async def go() -> None:
        pending = [asyncio.ensure_future(batcher.submit(policy, rows(4, i), None)) for i in range(10)]
        await asyncio.sleep(0)
        assert await batcher.drain(timeout=30) is True
        assert all(p.done() and p.exception() is None for p in pending)
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit(policy, rows(1), None)

    asyncio.run(go())
    assert batcher.queue_rows == 0


def test_direct_onnx_run_answers_as_the_session_wrapper(policy: OnnxPolicy) -> None:
    """`OnnxPolicy.run` skips onnxruntime's Python wrapper on CPU; it must give the wrapper's actions."""
    assert policy._run is not None  # the CPU provider of the installed onnxruntime offers the direct call
    states, noise = rows(5), np.random.default_rng(1).standard_normal((5, 1), dtype=np.float32)
    (wrapped,) = policy.session.run(["action"], {"state": states, "noise": noise})
    np.testing.assert_array_equal(policy.run(states, noise), wrapped)
