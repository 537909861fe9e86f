"""`ChunkedController` with a fake chunked policy and a fake clock: which chunk runs at which step, what a
request carries, and that a committed action is never replaced (no server; numpy and qipo_client only)."""

from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np
import pytest

from qipo_client.chunking import (
    ChunkedController,
    InpaintingPolicy,
    LatencyEstimator,
    SimulatedDelay,
    ThreadRunner,
    executed_jerk,
    prefix_inputs,
)
from qipo_client.policy import Noise, PolicyMetadata

PERIOD = 0.1


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeChunks:
    """The n-th call (from 0) for state s answers action i = s + i + 1000·n: an action says which call
    planned it and for which step (the state is the step index). Without `inpaint` it cannot inpaint."""

    def __init__(self, horizon: int) -> None:
        self.metadata = PolicyMetadata(
            name="fake",
            obs_dim=1,
            act_dim=1,
            action_low=(-1e9,),
            action_high=(1e9,),
            action_horizon=horizon,
            control_period_s=PERIOD,
        )
        self.calls: list[dict[str, Any]] = []

    def _chunk(self, states: np.ndarray) -> np.ndarray:
        h = self.metadata.action_horizon
        s = float(np.asarray(states).reshape(-1)[0])
        return (s + np.arange(h) + 1000.0 * len(self.calls)).astype(np.float32).reshape(1, h, 1)

    def infer(self, states: np.ndarray, noise: Noise = None) -> np.ndarray:
        chunk = self._chunk(states)
        self.calls.append({"state": float(states[0, 0]), "prefix": None, "committed": None})
        return chunk if self.metadata.action_horizon > 1 else chunk[:, 0]

    def reset(self) -> None:
        self.calls.append({"reset": True})


class FakeInpainting(FakeChunks):
    """Replacement inpainting: the committed actions of the prefix are copied into the chunk."""

    def infer_inpainted(
        self, states: np.ndarray, prefix: np.ndarray, committed: Any, noise: Noise = None
    ) -> np.ndarray:
        chunk = self._chunk(states)
        d = int(committed)
        chunk[0, :d] = prefix[0, :d]
        self.calls.append({"state": float(states[0, 0]), "prefix": prefix.copy(), "committed": d})
        return chunk


class VaryingDelay(SimulatedDelay):
    """SimulatedDelay whose n-th request takes delays[n] steps (the last one repeats)."""

    def __init__(self, delays: list[int], clock: FakeClock) -> None:
        super().__init__(delays[0], PERIOD, clock)
        self.delays, self.n = delays, 0

    def submit(self, call: Any) -> Any:
        self.steps = self.delays[min(self.n, len(self.delays) - 1)]
        self.n += 1
        return super().submit(call)


def drive(ctrl: ChunkedController, clock: Optional[FakeClock], steps: int) -> list[float]:
    actions = []
    for k in range(steps):
        action = ctrl.step(np.array([float(k)]))
        assert action.shape == (1,)
        actions.append(float(action[0]))
        if clock is not None:
            clock.t += PERIOD
    return actions


def assert_committed_kept(ctrl: ChunkedController, actions: list[float]) -> None:
    """Every committed action of every request ran at its step, and the chunk took over exactly at its
    switch step."""
    assert ctrl.switches
    for sw in ctrl.switches:
        for i in range(sw.committed):
            assert actions[sw.request_step + i] == sw.prefix[i, 0]
        if sw.switch_step < len(actions):
            assert actions[sw.switch_step] == sw.chunk[sw.index, 0]


def test_synchronous_use_replays_each_chunk_then_asks_again() -> None:
    policy = FakeInpainting(4)
    ctrl = ChunkedController(policy)
    actions = drive(ctrl, None, 10)
    # calls at steps 0, 4, 8; a chunk's action for step k is k + 1000·call
    assert actions == [0, 1, 2, 3, 1004, 1005, 1006, 1007, 2008, 2009]
    assert [c["state"] for c in policy.calls] == [0.0, 4.0, 8.0]
    assert all(c["prefix"] is None for c in policy.calls)  # the queue was empty: nothing to inpaint
    assert ctrl.starved == 0 and ctrl.latency_steps() == 0  # the call itself is the wait


def test_synchronous_use_of_a_one_action_policy_is_one_call_per_step() -> None:
    policy = FakeChunks(1)
    ctrl = ChunkedController(policy)
    actions = drive(ctrl, None, 3)
    assert actions == [0, 1001, 2002] and len(policy.calls) == 3


def test_real_time_requests_carry_the_committed_prefix_and_switch_after_the_delay() -> None:
    clock = FakeClock()
    policy = FakeInpainting(8)
    assert isinstance(policy, InpaintingPolicy)
    ctrl = ChunkedController(policy, runner=SimulatedDelay(2, PERIOD, clock), clock=clock)
    actions = drive(ctrl, clock, 40)
    assert ctrl.starved == 1  # only the first chunk, with nothing queued, is waited for
    assert ctrl.latency_steps() == 2
    later = list(ctrl.switches)[1:]
    assert all(sw.committed == 2 and sw.index == 2 and sw.inpainted for sw in later)
    # execute_steps = H // 2 = 4: a request whenever 4 actions are left, each carrying them as the prefix
    assert all(len(sw.prefix) == 4 for sw in later)
    assert all(b.request_step - a.request_step == 4 for a, b in zip(later, later[1:]))
    assert_committed_kept(ctrl, actions)
    # every action is the one planned for its own step: no step skipped or repeated at a switch
    assert [a % 1000 for a in actions] == list(range(40))


def test_an_early_reply_keeps_the_committed_actions() -> None:
    """The estimate says 3 steps, the reply comes after 1: the switch waits for the committed three."""
    clock = FakeClock()
    policy = FakeInpainting(8)
    runner = VaryingDelay([3, 3, 1], clock)
    ctrl = ChunkedController(policy, runner=runner, clock=clock, execute_steps=2)
    actions = drive(ctrl, clock, 30)
    early = [sw for sw in ctrl.switches if sw.committed > round(sw.latency_s / PERIOD)]
    assert early and all(sw.index == sw.committed for sw in early)
    assert_committed_kept(ctrl, actions)
    assert [a % 1000 for a in actions] == list(range(30))


def test_a_late_reply_switches_at_the_step_it_arrives() -> None:
    """The estimate says 1 step, the reply takes 3: the old actions ran meanwhile, the switch comes later."""
    clock = FakeClock()
    policy = FakeInpainting(8)
    ctrl = ChunkedController(policy, runner=VaryingDelay([1, 1, 3], clock), clock=clock)
    actions = drive(ctrl, clock, 12)
    late = [sw for sw in ctrl.switches if sw.index > sw.committed]
    assert late and late[0].committed == 1 and late[0].index == 3
    assert_committed_kept(ctrl, actions)
    assert [a % 1000 for a in actions] == list(range(12))


def test_without_inpainting_the_switch_is_naive_but_at_the_right_index() -> None:
    clock = FakeClock()
    policy = FakeChunks(4)
    ctrl = ChunkedController(policy, runner=SimulatedDelay(1, PERIOD, clock), clock=clock)
    actions = drive(ctrl, clock, 20)
    assert all(c["prefix"] is None for c in policy.calls)
    assert not any(sw.inpainted for sw in ctrl.switches)
    assert_committed_kept(ctrl, actions)
    assert [a % 1000 for a in actions] == list(range(20))


def test_reset_starts_a_new_episode() -> None:
    clock = FakeClock()
    policy = FakeInpainting(4)
    ctrl = ChunkedController(policy, runner=SimulatedDelay(1, PERIOD, clock), clock=clock)
    drive(ctrl, clock, 5)
    ctrl.reset()
    assert ctrl.step_index == 0 and ctrl.queued == 0 and policy.calls[-1] == {"reset": True}
    assert ctrl.latency_steps() == 1  # the link is the same: the estimate is kept
    assert ctrl.step(np.array([0.0])).shape == (1,)


def test_real_time_needs_a_period() -> None:
    policy = FakeChunks(4)
    policy.metadata = PolicyMetadata("fake", 1, 1, (-1.0,), (1.0,), action_horizon=4)
    with pytest.raises(ValueError, match="period"):
        ChunkedController(policy, runner=SimulatedDelay(1, PERIOD, FakeClock()))
    with pytest.raises(ValueError, match="execute_steps"):
        ChunkedController(policy, execute_steps=5)


def test_run_paces_the_loop_at_the_period() -> None:
    clock = FakeClock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.t += seconds

    def apply(action: np.ndarray) -> None:
        clock.t += 0.03  # the robot's own work takes 30 ms of each 100 ms period

    applied: list[float] = []
    ctrl = ChunkedController(FakeInpainting(4), clock=clock)
    ctrl.run(lambda: np.array([len(applied)]), lambda a: applied.append(float(a[0])) or apply(a), 6, sleep)
    assert applied == [0, 1, 2, 3, 1004, 1005]
    assert sleeps == pytest.approx([0.07] * 6)


def test_thread_runner_keeps_playing_the_queue_while_a_request_runs() -> None:
    gate = threading.Event()

    class Gated(FakeInpainting):
        def infer_inpainted(self, *args: Any, **kwargs: Any) -> np.ndarray:
            gate.wait(5)
            return super().infer_inpainted(*args, **kwargs)

    clock = FakeClock()
    runner = ThreadRunner(clock)
    ctrl = ChunkedController(Gated(4), runner=runner, clock=clock, period_s=PERIOD)
    try:
        first = [float(ctrl.step(np.array([k]))[0]) for k in range(3)]  # step 2 sends the next request
        assert first == [0, 1, 2] and ctrl.queued == 1
        assert float(ctrl.step(np.array([3]))[0]) == 3  # still in flight: the queue plays on
        gate.set()
        assert float(ctrl.step(np.array([4]))[0]) == 1004  # the queue ran dry: waits for the reply
        # 2 when step 4 finds the queue empty and waits, 1 when the reply lands just before it looks
        assert ctrl.starved in (1, 2)
    finally:
        gate.set()
        runner.close()


def test_latency_estimator_takes_the_larger_of_ewma_and_a_high_quantile() -> None:
    est = LatencyEstimator(alpha=0.5, window=10, quantile=0.9)
    assert est.steps(0.1) == 0
    for seconds in (0.1, 0.1, 0.1):
        est.observe(seconds)
    assert est.seconds == pytest.approx(0.1) and est.steps(0.1) == 1
    est.observe(0.25)  # one slow reply raises the estimate at once
    assert est.steps(0.1) == 3
    for _ in range(10):
        est.observe(0.15)
    assert est.steps(0.1) == 2


def test_prefix_inputs_pad_and_refuse() -> None:
    padded, d, length = prefix_inputs(np.ones((2, 1)), 1, rows=1, horizon=4, act_dim=1)
    assert padded.shape == (1, 4, 1) and padded[0, :, 0].tolist() == [1, 1, 0, 0]
    assert d.tolist() == [1.0] and length.tolist() == [2.0]
    with pytest.raises(ValueError, match="prefix has shape"):
        prefix_inputs(np.ones((1, 5, 1)), 0, rows=1, horizon=4, act_dim=1)
    with pytest.raises(ValueError, match="committed"):
        prefix_inputs(np.ones((1, 2, 1)), 3, rows=1, horizon=4, act_dim=1)
    with pytest.raises(ValueError, match="below the action horizon"):
        prefix_inputs(np.ones((1, 4, 1)), 4, rows=1, horizon=4, act_dim=1)
    with pytest.raises(ValueError, match="NaN"):
        prefix_inputs(np.full((1, 2, 1), np.nan), 0, rows=1, horizon=4, act_dim=1)


def test_executed_jerk_separates_boundaries_from_inside() -> None:
    actions = [np.array([x]) for x in (0.0, 1.0, 2.0, 10.0, 11.0)]
    jerk = executed_jerk(actions, boundaries=[3])
    assert jerk == {"boundary": 8.0, "inside": 1.0, "boundaries": 1}
