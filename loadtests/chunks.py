"""Closed-loop benchmark of action chunks under inference delay through the real server (make bench-chunks).

Every policy (a trained run directory, exported here, or an artifact) is published to a directory registry
and served by the real app under uvicorn; the robot side is `RemotePolicy` over HTTP (msgpack), so chunks,
prefixes and seeds travel exactly as a robot's would. The delay is simulated deterministically in control
steps d: a reply to the request made at step k is available at step k + d (`SimulatedDelay` on a clock the
loop advances one period per step), and the env does not move while a robot waits. Every request's noise
comes from `step_seed(seed, episode, step)`, so every arm sees the same noise.

Arms, per env and delay d ∈ DELAYS:
- `h1-delayed` (an H = 1 policy): the action computed from s_t is applied at t + d (zero action before the
  first reply);
- `sync`: chunks executed open-loop, the robot waiting for each reply (d costs wall time, not return:
  `waited_steps` counts it);
- `naive`: the next chunk requested halfway through the current one and switched in when it arrives, at
  the right index but not conditioned on what is executing;
- `ensemble`: ACT's temporal ensembling: a chunk requested at every step, the action for step t the
  average of every arrived chunk's action for t, weighted exp(−m·i) with i = 0 the oldest (m = 0.01); when
  no arrived chunk covers t (d ≥ H), the newest one's last action holds;
- `inpaint`: as `naive`, with the queue's remaining actions sent as the prefix and d of them committed
  (the artifact's inpainting: replace or soft).

Metrics: return; the action jerk, mean |a_{t+1} − a_t|, at chunk boundaries (a switch to a new chunk)
against inside chunks; `starved`: steps at which the queue was empty and the robot waited (d ≥ what is
queued). Plus H ∈ {1, 4, 8} (whatever horizons are given) at d = 0, executed synchronously, so the cost or
gain of chunking itself is known. Writes chunks.json, chunks.md and chunks.png.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import platform
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qipo_client import RemotePolicy, Seeds, step_seed
from qipo_client.chunking import ChunkedController, SimulatedDelay, executed_jerk

DELAYS = (0, 1, 2, 4, 8)
ARMS = ("h1-delayed", "sync", "naive", "ensemble", "inpaint")
ENSEMBLE_M = 0.01  # ACT's temporal-ensembling rate


@dataclass(frozen=True)
class Served:
    """One exported policy: its artifact and what the manifest says about it."""

    artifact: Path
    name: str
    env_id: str
    horizon: int
    period_s: float | None
    label: str  # the input it came from


class StepClock:
    """Simulated time: the loop advances it one control period per step."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# ----- executors: state in, the action to apply at this step out -------------------------------------------
class Delayed:
    """H = 1 under delay d: the action computed from s_t is applied at t + d (zeros before the first)."""

    def __init__(self, policy: Any, delay: int, noise: Callable[[int], Any]) -> None:
        self.policy, self.delay, self.noise = policy, delay, noise
        self.queue: deque[np.ndarray] = deque()
        self.step_index = 0

    def step(self, state: np.ndarray) -> np.ndarray:
        k = self.step_index
        self.step_index += 1
        out = np.asarray(self.policy.infer(np.asarray(state, np.float32)[None], self.noise(k)), np.float32)
        self.queue.append(out.reshape(-1, out.shape[-1])[0])
        if len(self.queue) > self.delay:
            return self.queue.popleft()
        return np.zeros_like(self.queue[0])


class TemporalEnsemble:
    """ACT's temporal ensembling under delay d (module docstring): a chunk per step, arriving d later."""

    def __init__(self, policy: Any, delay: int, noise: Callable[[int], Any], m: float = ENSEMBLE_M) -> None:
        self.policy, self.delay, self.noise, self.m = policy, delay, noise, m
        self.horizon = policy.metadata.action_horizon
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (request step, chunk [H, A]), oldest first
        self.step_index = 0
        self.last: np.ndarray | None = None

    def step(self, state: np.ndarray) -> np.ndarray:
        k = self.step_index
        self.step_index += 1
        chunk = np.asarray(self.policy.infer(np.asarray(state, np.float32)[None], self.noise(k)), np.float32)
        self.chunks.append((k, chunk.reshape(self.horizon, -1)))
        while self.chunks and self.chunks[0][0] + self.horizon <= k - self.delay:
            self.chunks.popleft()  # too old to cover any step from now on, once arrived
        return self.action_at(k)

    def action_at(self, t: int) -> np.ndarray:
        arrived = [(s, c) for s, c in self.chunks if s + self.delay <= t]
        covering = [c[t - s] for s, c in arrived if t - s < self.horizon]
        if covering:
            weights = np.exp(-self.m * np.arange(len(covering)))
            action = (np.stack(covering) * (weights / weights.sum())[:, None]).sum(axis=0)
        elif arrived:
            action = arrived[-1][1][-1]
        else:
            action = np.zeros_like(self.chunks[0][1][0])
        self.last = action.astype(np.float32)
        return self.last


def executor(arm: str, policy: Any, delay: int, noise: Callable[[int], Any], period: float) -> Any:
    """The arm's executor and its clock (None: no simulated time)."""
    clock = StepClock()
    if arm == "h1-delayed":
        return Delayed(policy, delay, noise), clock
    if arm == "ensemble":
        return TemporalEnsemble(policy, delay, noise), clock
    if arm == "sync":
        return ChunkedController(policy, noise=noise, clock=clock, period_s=period, history=100_000), clock
    runner = SimulatedDelay(delay, period, clock)
    ctrl = ChunkedController(
        policy,
        runner=runner,
        clock=clock,
        period_s=period,
        inpaint=arm == "inpaint",
        noise=noise,
        history=100_000,
    )
    return ctrl, clock


def run_episode(
    policy: Any, served: Served, arm: str, delay: int, episode: int, seed: int, max_steps: int
) -> dict[str, Any]:
    """One episode of `arm` at delay d: return, jerk at boundaries / inside, starved and waited steps."""
    import gymnasium as gym

    period = served.period_s or 0.05
    noise = functools.partial(_seeds, seed, episode)
    act, clock = executor(arm, policy, delay, noise, period)
    env = gym.make(served.env_id)
    obs, _ = env.reset(seed=seed * 1000 + episode)
    total, actions, steps = 0.0, [], 0
    for steps in range(1, max_steps + 1):  # noqa: B007 (the count is read after the loop)
        action = act.step(obs)
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        clock.t += period
        if terminated or truncated:
            break
    env.close()
    boundaries: list[int] = []
    starved = 0
    if isinstance(act, ChunkedController):
        boundaries = [sw.switch_step for sw in act.switches if sw.request_step > 0]
        # the first chunk is always waited for when it takes time; a synchronous robot always waits
        starved = 0 if arm == "sync" else max(0, act.starved - (1 if delay > 0 else 0))
    jerk = executed_jerk(actions, boundaries)
    all_jerk = executed_jerk(actions, [])["inside"]
    waited = delay * len(act.switches) if arm == "sync" and isinstance(act, ChunkedController) else 0
    return {
        "return": total,
        "steps": steps,
        "jerk_boundary": jerk["boundary"],
        "jerk_inside": jerk["inside"],
        "jerk_all": all_jerk,
        "starved": starved,
        "waited_steps": waited,
    }


def _seeds(seed: int, episode: int, step: int) -> Seeds:
    return Seeds([step_seed(seed, episode, step)])


# ----- inputs and serving -----------------------------------------------------------------------------
def resolve(paths: Sequence[Path], work: Path) -> list[Served]:
    """Artifacts as they are; run directories (`qipo train` output) exported under `work` first."""
    from service.artifact import verify_artifact

    out = []
    for i, path in enumerate(paths):
        artifact = path
        if not (path / "manifest.json").exists():
            from training.cli import export_command

            artifact = work / "artifacts" / f"{i}-{path.name}"
            if not (artifact / "manifest.json").exists():
                export_command(run=path, out=artifact)
        manifest = verify_artifact(artifact)
        env_id = manifest.env_id or manifest.dataset.get("env_id")
        if not env_id:
            raise ValueError(f"{path}: the manifest records no env id; export it with --env")
        out.append(
            Served(
                artifact, manifest.name, env_id, manifest.action_horizon, manifest.control_period_s, str(path)
            )
        )
    return out


@contextlib.contextmanager
def serving(served: Served, work: Path) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, serving `served` from its own registry."""
    from service.app import create_app
    from service.registry import open_registry
    from service.settings import ServeSettings
    from tests.helpers import running_server

    root = work / "registries" / hashlib.sha256(str(served.artifact.resolve()).encode()).hexdigest()[:12]
    reg = open_registry(str(root), "qipo")
    versions = reg.versions(served.name) if served.name in reg.models() else []
    mv = versions[-1] if versions else reg.publish(served.artifact)
    reg.promote(served.name, "production", mv.version)
    settings = ServeSettings.model_validate(
        {
            "registry": str(root),
            "model_name": served.name,
            "cache_dir": work / "cache",
            "warmup_batches": 1,
            "log_level": "warning",
        }
    )
    with running_server(create_app(settings)) as running:
        yield running.url


def measure(
    served: Served, arms: Sequence[str], delays: Sequence[int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every (arm, d, episode) of one policy through its own server."""
    rows = []
    with serving(served, args.work) as url, RemotePolicy(url, timeout=30.0) as policy:
        for arm in arms:
            for delay in delays:
                for episode in range(args.episodes):
                    row = run_episode(policy, served, arm, delay, episode, args.seed, args.max_steps)
                    rows.append(
                        {"env_id": served.env_id, "horizon": served.horizon, "policy": served.label}
                        | {"arm": arm, "delay": delay, "episode": episode}
                        | row
                    )
                if args.verbose:
                    last = rows[-args.episodes :]
                    mean = np.mean([r["return"] for r in last])
                    print(
                        f"{served.env_id} H={served.horizon} {arm} d={delay}: return {mean:.1f}", flush=True
                    )
    return rows


def plan(served: Served, horizon: int, delays: Sequence[int]) -> tuple[list[str], list[int]]:
    """Which arms and delays a policy runs: H = 1 the delayed arm, H = `horizon` the chunk arms, any other
    H only the synchronous run at d = 0 (the horizon sweep)."""
    if served.horizon == 1:
        return ["h1-delayed"], list(delays)
    if served.horizon == horizon:
        return ["sync", "naive", "ensemble", "inpaint"], list(delays)
    return ["sync"], [0]


def _mean(values: Sequence[float]) -> float | None:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if len(arr) else None


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds (policies) and episodes per (env, H, arm, d)."""
    groups: dict[tuple[str, int, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["env_id"], row["horizon"], row["arm"], row["delay"]), []).append(row)
    out = []
    for (env_id, horizon, arm, delay), group in sorted(groups.items()):
        returns = [r["return"] for r in group]
        boundary = _mean([r["jerk_boundary"] for r in group])
        inside = _mean([r["jerk_inside"] for r in group])
        out.append(
            {
                "env_id": env_id,
                "horizon": horizon,
                "arm": arm,
                "delay": delay,
                "seeds": len({r["policy"] for r in group}),
                "episodes": len(group),
                "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)),
                "jerk_boundary": boundary,
                "jerk_inside": inside,
                "jerk_ratio": boundary / inside if boundary is not None and inside else None,
                "jerk_all": _mean([r["jerk_all"] for r in group]),
                "starved_per_episode": float(np.mean([r["starved"] for r in group])),
                "waited_steps_per_episode": float(np.mean([r["waited_steps"] for r in group])),
            }
        )
    return out


def horizon_sweep(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return per H at d = 0, executed synchronously (H = 1: one action per step)."""
    return [
        {k: row[k] for k in ("env_id", "horizon", "seeds", "episodes", "return_mean", "return_std")}
        for row in summary
        if row["delay"] == 0 and row["arm"] in ("sync", "h1-delayed")
    ]


def claims(summary: Sequence[dict[str, Any]], horizon: int, delay: int = 4) -> list[dict[str, Any]]:
    """The issue's claims per env, computed from the summary (None where an arm is missing)."""
    by = {(r["env_id"], r["horizon"], r["arm"], r["delay"]): r for r in summary}
    out = []
    for env_id in sorted({r["env_id"] for r in summary}):
        inpaint = by.get((env_id, horizon, "inpaint", delay))
        base = by.get((env_id, horizon, "sync", 0))
        naive = by.get((env_id, horizon, "naive", delay))
        ensemble = by.get((env_id, horizon, "ensemble", delay))
        h1 = by.get((env_id, 1, "h1-delayed", 0))
        ret = None if inpaint is None else inpaint["return_mean"]
        kept = ret / base["return_mean"] if ret is not None and base and base["return_mean"] > 0 else None
        out.append(
            {
                "env_id": env_id,
                f"inpaint_d{delay}_over_d0": kept,
                "inpaint_keeps_90pct": None if kept is None else kept >= 0.9,
                "inpaint_beats_naive": None if ret is None or naive is None else ret > naive["return_mean"],
                "inpaint_beats_ensemble": None
                if ret is None or ensemble is None
                else ret > ensemble["return_mean"],
                "inpaint_jerk_ratio": None if inpaint is None else inpaint["jerk_ratio"],
                "chunked_d0_within_5pct_of_h1": None
                if base is None or h1 is None or h1["return_mean"] <= 0
                else base["return_mean"] >= 0.95 * h1["return_mean"],
            }
        )
    return out


# ----- report -----------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# Action chunks under inference delay",
        "",
        f"Generated by `make bench-chunks` (loadtests/chunks.py) on {meta['platform']}, {meta['created']}. "
        f"Chunk arms use H = {meta['horizon']}; delay d in control steps, simulated deterministically; "
        f"{meta['episodes']} episodes per policy (≤ {meta['max_steps']} steps), every policy served by the "
        "real server and called over HTTP. Jerk: mean |a_{t+1} − a_t| at chunk boundaries / inside chunks "
        "(the ensemble and H = 1 switch every step: `all` only). starved: steps per episode at which the "
        "queue ran dry (d ≥ the actions left when the request went out, e.g. d ≥ H) and the robot waited "
        "for the reply with the env standing still; waited: periods the synchronous robot stood still.",
        "",
    ]
    for env_id in sorted({r["env_id"] for r in report["summary"]}):
        lines += [
            f"## {env_id}",
            "",
            "| arm | H | d | seeds | return | jerk boundary / inside | ratio | jerk all | starved | waited |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in report["summary"]:
            if r["env_id"] != env_id or (r["arm"] == "sync" and r["horizon"] != meta["horizon"]):
                continue
            lines.append(
                f"| {r['arm']} | {r['horizon']} | {r['delay']} | {r['seeds']} | "
                f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | {_fmt(r['jerk_boundary'])} / "
                f"{_fmt(r['jerk_inside'])} | {_fmt(r['jerk_ratio'], '.2f')} | {_fmt(r['jerk_all'])} | "
                f"{r['starved_per_episode']:.1f} | {r['waited_steps_per_episode']:.0f} |"
            )
        lines.append("")
    lines += [
        "## Horizon at d = 0 (synchronous)",
        "",
        "| env | H | seeds | return |",
        "| --- | --- | --- | --- |",
    ]
    for r in report["horizon_sweep"]:
        lines.append(
            f"| {r['env_id']} | {r['horizon']} | {r['seeds']} | "
            f"{r['return_mean']:.1f} ± {r['return_std']:.1f} |"
        )
    lines += ["", "## Claims", "", "```json", json.dumps(report["claims"], indent=2), "```", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env_id"] for r in report["summary"]})
    fig, axes = plt.subplots(2, len(envs), figsize=(5 * len(envs), 7), squeeze=False)
    for col, env_id in enumerate(envs):
        rows = [r for r in report["summary"] if r["env_id"] == env_id]
        for arm in ARMS:
            arm_rows = sorted(
                (r for r in rows if r["arm"] == arm and (arm != "sync" or r["horizon"] != 1)),
                key=lambda r: r["delay"],
            )
            arm_rows = [r for r in arm_rows if arm != "sync" or r["horizon"] == report["meta"]["horizon"]]
            if not arm_rows:
                continue
            delays = [r["delay"] for r in arm_rows]
            axes[0][col].plot(delays, [r["return_mean"] for r in arm_rows], marker="o", label=arm)
            jerk = [r["jerk_ratio"] if r["jerk_ratio"] is not None else np.nan for r in arm_rows]
            axes[1][col].plot(delays, jerk, marker="o", label=arm)
        axes[0][col].set(title=env_id, xlabel="delay d (control steps)", ylabel="return")
        axes[1][col].set(xlabel="delay d (control steps)", ylabel="jerk boundary / inside")
        axes[0][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "chunks.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "chunks.md").write_text(markdown(report))
    plot(report, out / "chunks.png")


# ----- entry point ------------------------------------------------------------------------------------
def smoke_artifacts(work: Path, horizons: Sequence[int] = (1, 4, 8)) -> list[Path]:
    """Tiny Pendulum policies (a few hundred steps each) exported as artifacts: the pipeline's check."""
    from tests.conftest import TINY_CONFIG
    from training.checkpoint import policy_from_checkpoint
    from training.config import QIPOConfig
    from training.data import load_dataset
    from training.data.pendulum import make_pendulum_datasets
    from training.export import export_artifact
    from training.qipo import QIPOTrainer

    data = make_pendulum_datasets(work / "data", ("mixed",), episodes=10, seed=0)["mixed"]
    out = []
    for h in horizons:
        artifact = work / "artifacts" / f"pendulum-h{h}"
        if not (artifact / "manifest.json").exists():
            cfg = QIPOConfig.model_validate(TINY_CONFIG | {"action_horizon": h})
            trainer = QIPOTrainer(load_dataset(data), cfg, progress=False)
            trainer.fit()
            trainer.save(work / "runs" / f"h{h}")
            policy, cfg, _ = policy_from_checkpoint(work / "runs" / f"h{h}")
            export_artifact(
                policy,
                artifact,
                name=f"pendulum-h{h}",
                variant=cfg.variant,
                training_config=cfg.model_dump(mode="json"),
                dataset={"name": "pendulum/mixed-v0"},
                scores={},
                env_id="Pendulum-v1",
            )
        out.append(artifact)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (`qipo train`) or artifacts")
    parser.add_argument("--out", type=Path, default=None, help="default docs/bench (--smoke: build/…)")
    parser.add_argument("--work", type=Path, default=Path("build/bench-chunks-work"))
    parser.add_argument("--horizon", type=int, default=4, help="H of the chunk arms")
    parser.add_argument("--delays", type=int, nargs="+", default=list(DELAYS))
    parser.add_argument("--episodes", type=int, default=5, help="per policy, arm and delay")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny Pendulum policies, a few short episodes")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.work = args.work.with_name(args.work.name + "-smoke")
        args.out = args.out or Path("build/bench-chunks-smoke")
    elif not args.runs:
        parser.error("give trained run directories or artifacts (or --smoke)")
    args.out = args.out or Path("docs/bench")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    paths = smoke_artifacts(args.work) if args.smoke else args.runs
    served = resolve(paths, args.work)
    rows: list[dict[str, Any]] = []
    for policy in served:
        arms, delays = plan(policy, args.horizon, args.delays)
        rows += measure(policy, arms, delays, args)
    summary = summarise(rows)
    report = {
        "meta": {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "platform": platform.platform(),
            "horizon": args.horizon,
            "delays": args.delays,
            "episodes": args.episodes,
            "max_steps": args.max_steps,
            "seed": args.seed,
            "smoke": args.smoke,
            "inputs": [{"path": s.label, "env_id": s.env_id, "horizon": s.horizon} for s in served],
            "seconds": time.perf_counter() - started,
        },
        "summary": summary,
        "horizon_sweep": horizon_sweep(summary),
        "claims": claims(summary, args.horizon),
        "episodes": rows,
    }
    write(report, args.out)
    return report
