"""Chunked training (issue 29): windows of H actions inside episodes, the H-step critic target, H = 1
unchanged bit for bit, and a tiny H = 4 run whose policy answers [B, 4, A] and evaluates open-loop."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CONFIG
from training.checkpoint import policy_from_checkpoint
from training.chunks import chunk_windows, windowed_next_rows
from training.config import QIPOConfig
from training.critic import IQLCritic
from training.data import load_dataset
from training.data.dataset import TransitionDataset
from training.diagnostics import episode_bounds
from training.qipo import QIPOTrainer

# A few steps of every phase on `synthetic()` (sampling in float32, so `auto` cannot pick bfloat16).
FEW_STEPS = {
    "behavior_steps": 6,
    "critic_steps": 4,
    "improve_steps": 4,
    "renew_every": 2,
    "support_size": 3,
    "critic_support": 3,
    "batch_size": 16,
    "improve_batch_size": 4,
    "solver_steps": 3,
    "probe_states": 32,
    "sample_precision": "float32",
    "log_every": 5,
    "network": {"hidden": 16, "blocks": 1, "time_dim": 4, "critic_hidden": 16, "critic_layers": 2},
}
# sha256[:16] of the net, the critic's twin Q and 5 policy actions after `FEW_STEPS` on `synthetic()`,
# produced by the trainer before action chunks existed (commit 306e907, torch 2.13 on x86-64, one thread,
# ATen's AVX2 kernels: an AVX-512 CPU sums in another order, so the check runs with ATEN_CPU_CAPABILITY=avx2).
BEFORE_CHUNKS = {
    "qipo-ot": ("f0d930bec0960030", {}),
    "softmax-q": ("736362e9a8992899", {"critic_kind": "softmax-q"}),
    "qipo-diff": ("ca303722dc05a4a7", {"variant": "qipo-diff"}),
    "bc": ("dc38990efd2483bb", {"algo": "bc"}),
    "resample-best": (
        "e73bd12a22dfcab5",
        {"improve_loss": "resample", "action_selection": "best-of-n", "best_of_n": 3},
    ),
}


def synthetic() -> TransitionDataset:
    """6 episodes of 20 steps (the second terminates, the others time out), random but fixed."""
    rng = np.random.default_rng(0)
    n, length = 120, 20
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    terminals[2 * length - 1], timeouts[2 * length - 1] = True, False
    arrays = {
        "observations": obs[:-1],
        "next_observations": obs[1:],
        "actions": rng.uniform(-2, 2, size=(n, 1)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    return TransitionDataset.validated(arrays, action_low=np.array([-2.0]), action_high=np.array([2.0]))


def digest(trainer: QIPOTrainer) -> str:
    h = hashlib.sha256()
    for state in (trainer.net.state_dict(), trainer.critic.q.state_dict()):
        for value in state.values():
            h.update(value.detach().numpy().tobytes())
    policy = trainer.policy()
    gen = torch.Generator().manual_seed(1)
    states, noise = torch.randn(5, 3, generator=gen), torch.randn(5, policy.noise_dim, generator=gen)
    h.update(policy(states, noise).detach().numpy().tobytes())
    return h.hexdigest()[:16]


# ----- windows --------------------------------------------------------------------------------------
def test_windows_stay_inside_episodes_and_pad_only_terminal_tails() -> None:
    # rows 0-4 time out at 4; rows 5-7 terminate at 7; rows 8-9 are a trailing, unflagged (cut) episode
    terminals = np.zeros(10, bool)
    timeouts = np.zeros(10, bool)
    timeouts[4], terminals[7] = True, True
    rewards = np.arange(1, 11, dtype=np.float32)
    w = chunk_windows(rewards, terminals, timeouts, horizon=3, gamma=0.5)
    # truncated tails are dropped (3, 4 and the cut episode), terminal tails kept (6, 7)
    assert w.rows.tolist() == [0, 1, 2, 5, 6, 7]
    episode = np.empty(10, int)
    for k, (start, end, _) in enumerate(episode_bounds(terminals, timeouts)):
        episode[start : end + 1] = k
    for t in w.rows:  # no window crosses an episode end
        assert (episode[w.action_rows[t]] == episode[t]).all() and episode[w.next_rows[t]] == episode[t]
    assert w.action_rows[6].tolist() == [6, 7, 7] and w.mask[6].tolist() == [True, True, False]
    assert w.action_rows[7].tolist() == [7, 7, 7] and w.mask[7].tolist() == [True, False, False]
    assert w.mask[w.rows[:4]].all()
    assert w.dones[w.rows].tolist() == [False, False, False, True, True, True]
    assert w.next_rows[[0, 2, 5, 6]].tolist() == [2, 4, 7, 7]
    assert w.discount == 0.5**3


def test_h_step_reward_sums_by_hand() -> None:
    terminals, timeouts = np.zeros(10, bool), np.zeros(10, bool)
    timeouts[4], terminals[7] = True, True
    rewards = np.arange(1, 11, dtype=np.float32)
    w = chunk_windows(rewards, terminals, timeouts, horizon=3, gamma=0.5)
    assert w.rewards[0] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert w.rewards[2] == pytest.approx(3 + 0.5 * 4 + 0.25 * 5)
    assert w.rewards[5] == pytest.approx(6 + 0.5 * 7 + 0.25 * 8)
    assert w.rewards[6] == pytest.approx(7 + 0.5 * 8)  # the terminal ends the sum: nothing after it
    assert w.rewards[7] == pytest.approx(8)


def test_one_step_windows_are_the_transitions() -> None:
    data = synthetic()
    w = chunk_windows(data.rewards, data.terminals, data.timeouts, horizon=1, gamma=0.99)
    assert w.valid.all() and w.mask.all() and w.discount == 0.99
    assert np.array_equal(w.rewards, data.rewards) and np.array_equal(w.dones, data.terminals)
    assert np.array_equal(w.action_rows[:, 0], np.arange(data.size))
    assert np.array_equal(w.next_rows, np.arange(data.size))


def test_bootstrap_states_are_found_h_rows_later() -> None:
    data = synthetic()
    w = chunk_windows(data.rewards, data.terminals, data.timeouts, horizon=4, gamma=0.99)
    next_states = data.next_observations[w.next_rows]
    index, extra = windowed_next_rows(data.observations, next_states, 4)
    table = np.concatenate([data.observations, next_states[extra]])
    assert np.array_equal(table[index], next_states)
    assert index[0] == 4 and len(extra) < data.size // 4  # only the windows reaching an episode end


# ----- the trainer ----------------------------------------------------------------------------------
def test_critic_target_is_the_h_step_backup_by_hand() -> None:
    data, h, gamma = synthetic(), 4, 0.9
    cfg = QIPOConfig.model_validate(FEW_STEPS | {"action_horizon": h, "gamma": gamma, "reward_scale": 2.0})
    trainer = QIPOTrainer(data, cfg, progress=False)
    critic = trainer.critic
    assert isinstance(critic, IQLCritic) and critic.gamma == pytest.approx(gamma**h)
    norm = trainer.normalizer
    for t in (0, 10, 16, 36, 39):  # inside episodes, the last full window, and two at the terminal (39)
        assert bool(trainer.windows.valid[t])
        end = 39 if 20 <= t < 40 else (t // 20) * 20 + 19
        n = min(h, end - t + 1)
        rewards = sum(gamma**k * 2.0 * float(data.rewards[t + k]) for k in range(n))
        terminal = t + n - 1 == 39
        with torch.no_grad():
            v = critic.value(norm.state(torch.as_tensor(data.observations[t + h : t + h + 1])))
        expected = rewards + (0.0 if terminal else gamma**h * float(v[0]))
        rows = torch.tensor([t])
        y = critic.target(trainer.r[rows], trainer.d[rows], trainer.s_next[rows])
        assert float(y[0]) == pytest.approx(expected, rel=1e-5, abs=1e-5)
        unit = norm.action_to_unit(torch.as_tensor(data.actions[t : t + n])).reshape(-1)
        assert torch.allclose(trainer.a[t, : len(unit)], unit)  # each action of the chunk normalised
    assert not set(trainer.train_rows.tolist()) & {17, 18, 19}  # a timed-out tail never trains


def digests_main() -> None:
    """Print {name: digest} for every BEFORE_CHUNKS configuration (run in a child with AVX2 kernels)."""
    torch.set_num_threads(1)
    out = {}
    for name, (_, overrides) in BEFORE_CHUNKS.items():
        trainer = QIPOTrainer(synthetic(), QIPOConfig.model_validate(FEW_STEPS | overrides), progress=False)
        trainer.fit()
        out[name] = digest(trainer)
    print(json.dumps(out))


@pytest.fixture(scope="module")
def digests_on_avx2() -> dict[str, str]:
    """The digests as an AVX2 machine computes them: bit-for-bit comparisons hold on any x86-64 CPU that
    has AVX2, whatever wider kernels it also has."""
    if "avx2" not in Path("/proc/cpuinfo").read_text(errors="ignore"):
        pytest.skip("the recorded digests come from ATen's AVX2 kernels; this CPU has no AVX2")
    root = Path(__file__).resolve().parents[2]
    env = os.environ | {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    code = "from tests.training.test_chunks import digests_main; digests_main()"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", BEFORE_CHUNKS)
def test_default_horizon_trains_exactly_as_before_chunks(name: str, digests_on_avx2: dict[str, str]) -> None:
    """H = 1 runs the chunk code path; its parameters after a few steps of each phase are the ones the
    trainer produced before chunks existed, bit for bit (a float sum in another order would show)."""
    assert digests_on_avx2[name] == BEFORE_CHUNKS[name][0]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"variant": "qipo-diff"}, {"algo": "bc"}, {"critic_kind": "softmax-q", "renewal": "eager"}],
    ids=["qipo-ot", "qipo-diff", "bc", "softmax-q-eager"],
)
def test_every_algorithm_takes_a_horizon(overrides: dict[str, object]) -> None:
    cfg = QIPOConfig.model_validate(FEW_STEPS | overrides | {"action_horizon": 3})
    trainer = QIPOTrainer(synthetic(), cfg, progress=False)
    history = trainer.fit()
    assert all(np.isfinite(r["loss"]) for r in history)
    assert trainer.net.act_dim == 3 and trainer.a.shape == (120, 3)
    assert trainer.policy().infer(np.zeros((2, 3), np.float32)).shape == (2, 3, 1)


def test_best_of_n_ranks_chunks() -> None:
    cfg = QIPOConfig.model_validate(
        FEW_STEPS | {"action_horizon": 2, "action_selection": "best-of-n", "best_of_n": 3}
    )
    trainer = QIPOTrainer(synthetic(), cfg, progress=False)
    trainer.fit()
    policy = trainer.policy()
    assert policy.noise_dim == 3 * 2 * 1
    assert policy.infer(np.zeros((4, 3), np.float32)).shape == (4, 2, 1)


def test_behaviour_policy_of_another_horizon_is_refused(tmp_path: Path) -> None:
    bc = QIPOTrainer(synthetic(), QIPOConfig.model_validate(FEW_STEPS | {"algo": "bc"}), progress=False)
    bc.save(tmp_path)
    chunked = QIPOConfig.model_validate(FEW_STEPS | {"action_horizon": 2})
    with pytest.raises(ValueError, match="action_horizon"):
        QIPOTrainer(synthetic(), chunked, progress=False).load_behavior(tmp_path)


def test_tiny_chunked_pendulum_run_acts_in_chunks_and_evaluates_open_loop(
    pendulum_dataset_dir: Path, tmp_path: Path
) -> None:
    from training.eval import evaluate

    steps = {"behavior_steps": 60, "critic_steps": 30, "improve_steps": 20, "renew_every": 10}
    cfg = QIPOConfig.model_validate(TINY_CONFIG | steps | {"action_horizon": 4})
    trainer = QIPOTrainer(load_dataset(pendulum_dataset_dir), cfg, progress=False)
    history = trainer.fit()
    assert all(np.isfinite(r["loss"]) for r in history)
    assert trainer.summary()["critic"]["q_mc_rows"] > 0  # diagnostics run on chunks too
    trainer.save(tmp_path)
    policy, loaded, _ = policy_from_checkpoint(tmp_path)
    assert loaded.action_horizon == 4
    states = load_dataset(pendulum_dataset_dir).observations[:3]
    chunk = policy.infer(states, np.zeros((3, policy.noise_dim), np.float32))
    assert chunk.shape == (3, 4, 1) and np.all(np.abs(chunk) <= 2.0)
    calls: list[int] = []
    infer = policy.infer
    policy.infer = lambda s, noise=None: calls.append(len(s)) or infer(s, noise)  # type: ignore[method-assign]
    result = evaluate(policy, "Pendulum-v1", episodes=2, progress=False)
    assert np.isfinite(result["mean_return"])
    assert calls == [2] * 50  # 200 steps, a chunk of 4 planned every 4 steps


def test_qipo_train_and_eval_run_a_chunked_policy(pendulum_dataset_dir: Path, tmp_path: Path) -> None:
    """`qipo train --set action_horizon=4` then `qipo eval RUN`: the CLI evaluates chunks open-loop."""
    import typer
    from typer.testing import CliRunner

    from training.cli import eval_command, train_command

    def invoke(command: object, *args: str) -> str:
        app = typer.Typer()
        app.command()(command)  # type: ignore[arg-type]
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return str(result.output)

    sets = ["behavior_steps=20", "critic_steps=10", "improve_steps=10", "renew_every=5", "support_size=2"]
    sets += ["critic_support=2", "batch_size=32", "improve_batch_size=8", "solver_steps=2"]
    sets += ["network.hidden=16", "network.blocks=1", "network.time_dim=4", "network.critic_hidden=16"]
    sets += ["action_horizon=4"]
    flags = [arg for item in sets for arg in ("--set", item)]
    run = tmp_path / "run"
    invoke(train_command, str(pendulum_dataset_dir), "--out", str(run), "--eval-episodes", "1", *flags)
    assert "return" in invoke(eval_command, str(run), "--episodes", "1")
