"""MicroBatcher with a real ONNX Runtime session (no HTTP): joining, splitting, seeds, deadlines, drain."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from service.batcher import BatchConfig, DeadlineExceeded, MicroBatcher, Overloaded
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

    async def go() -> tuple[list[np.ndarray], list[np.ndarray]]:
        together = await asyncio.gather(
            *(batcher.submit(policy, s[None], seed=i) for i, s in enumerate(states))
        )
        alone = [await batcher.submit(policy, s[None], seed=i) for i, s in enumerate(states)]
        return [r.actions for r in together], [r.actions for r in alone]

    together, alone = asyncio.run(go())
    assert calls(metrics) == (1 + 20, 40)  # the 20 concurrent requests shared one call
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    expected = policy.act(states[3:4], np.random.default_rng(3).standard_normal((1, 1), dtype=np.float32))
    np.testing.assert_array_equal(together[3], expected.actions)


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
    batcher = MicroBatcher(BatchConfig(max_queue_rows=10, queue_timeout_ms=1.0), Metrics())

    async def go() -> None:
        first = asyncio.ensure_future(batcher.submit(policy, rows(8), None))
        await asyncio.sleep(0)  # `first` is queued, its flush not yet run
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(policy, rows(4), None)
        await first
        time.sleep(0.005)  # block the loop: the next request waits past queue_timeout_ms before its flush
        late = asyncio.ensure_future(batcher.submit(policy, rows(1), None))
        await asyncio.sleep(0)
        time.sleep(0.005)
        with pytest.raises(Overloaded, match="queue_timeout_ms"):
            await late

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
