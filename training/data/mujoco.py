"""Tier-1 data: Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 datasets from SAC behaviour policies, written as
local Minari datasets (`<root>/<env>/<kind>-v0`), in the spirit of D4RL:

- random:        uniform random actions;
- medium:        rollouts of the SAC policy after `sac_steps` (stochastic actions, as in D4RL);
- medium-replay: what that SAC run saw while learning: rollouts of each of its snapshots (every
                 `sac_steps / REPLAY_SNAPSHOTS` steps, the untrained actor first), in training order, as many
                 transitions from each as SAC collected with it;
- medium-expert: half medium rollouts, half rollouts of the same SAC trained `expert_steps` further.

The behaviour policies are committed (`training/data/policies/<env>.npz`: plain weight arrays, no
pickle), so a fresh machine rebuilds every dataset by rollouts alone in about a minute; `train_sac=True`
(`qipo data make … --train-sac`) trains them anew with `training.data.sac` and writes a new policy file.
Everything needed to regenerate a dataset is recorded in `<root>/<env>/generation.json`: seeds, step
budgets, SAC hyper-parameters, the policy file's sha256, the returns of each policy (our own random/expert
references), wall times and library versions. Needs the `bench` extra (gymnasium[mujoco]).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.artifact import sha256_file
from training.data.minari_io import Episode, rollout, write_minari
from training.data.sac import NumpyActor, SACConfig, save_actor, train_sac
from training.data.suite import FAMILIES, MUJOCO_KINDS

# name → env id of every SAC-behaviour env (training.data.suite); `--train-sac` rewrites policies/<env>.npz.
ENVS = {name: f.env_id for name, f in FAMILIES.items() if f.generator == "mujoco"}
KINDS = MUJOCO_KINDS
POLICIES = Path(__file__).with_name("policies")
REPLAY_SNAPSHOTS = 10
GENERATION_FILE = "generation.json"


def _require_bench() -> None:
    try:
        import mujoco  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"MuJoCo datasets need the bench extra ({exc.name} is missing): pip install -e '.[bench]'"
        ) from exc


def rollouts(
    env_id: str, actor: NumpyActor | None, transitions: int, seed: int, desc: str, progress: bool = True
) -> list[Episode]:
    """Whole episodes until at least `transitions` steps; `actor` None means uniform random actions."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    total = 0
    bar = tqdm(total=transitions, desc=desc, unit="step", leave=False, disable=not progress)
    while total < transitions:
        if actor is None:
            episode = rollout(env, lambda obs: env.action_space.sample(), seed + len(episodes))
        else:
            episode = rollout(env, lambda obs: actor.act(obs, rng), seed + len(episodes))
        episodes.append(episode)
        total += len(episode.actions)
        bar.update(len(episode.actions))
    bar.close()
    env.close()
    return episodes


def mean_return(episodes: list[Episode]) -> float:
    return float(np.mean([ep.rewards.sum() for ep in episodes]))


def _versions() -> dict[str, str]:
    """Library versions that decide the bytes of a regenerated dataset (simulator, env, torch, numpy)."""
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("mujoco", "gymnasium", "torch", "numpy")}


def snapshot_steps(sac_steps: int, expert_steps: int) -> dict[str, int]:
    """Name → SAC env step of every actor kept: the replay snapshots, medium and expert."""
    every = max(1, sac_steps // REPLAY_SNAPSHOTS)
    out = {f"replay{i:02d}": i * every for i in range(REPLAY_SNAPSHOTS)}
    return out | {"medium": sac_steps, "expert": sac_steps + expert_steps}


def train_policies(
    env_id: str, path: Path, sac_steps: int, expert_steps: int, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Train SAC, keeping the actor at every snapshot step; writes them all into one `.npz` at `path`."""
    marks = snapshot_steps(sac_steps, expert_steps)
    total = marks["expert"]
    weights: dict[str, np.ndarray] = {}
    bar = tqdm(total=total, desc=f"{env_id} SAC", unit="step", mininterval=5.0, disable=not progress)
    state: dict[str, Any] | None = None
    buffer = None
    done = 0
    order: list[str] = []
    started = time.perf_counter()
    timings: dict[str, float] = {}
    for name, step in sorted(marks.items(), key=lambda kv: kv[1]):
        if step > done:
            state, buffer = train_sac(
                env_id, step - done, seed, state=state, buffer=buffer, progress=lambda n: bar.update(n)
            )
            done = step
        if state is None:  # the untrained actor (step 0): build it without stepping
            state, buffer = train_sac(env_id, 0, seed)
        for key, value in state["actor_npz"]().items():
            weights[f"{name}/{key}"] = value
        order.append(name)
        timings[name] = round(time.perf_counter() - started, 1)
    bar.close()
    weights["steps"] = np.asarray([marks[n] for n in order], np.int64)
    sha = save_actor(weights, path)
    return {"policy_file": path.name, "sha256": sha, "snapshot_steps": marks, "sac_timings_s": timings}


def load_actor(path: Path, name: str) -> NumpyActor:
    with np.load(path, allow_pickle=False) as data:
        prefix = f"{name}/"
        return NumpyActor({k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)})


def make_mujoco_datasets(
    env: str,
    root: Path,
    kinds: tuple[str, ...] = KINDS,
    *,
    sac_steps: int = 100_000,
    expert_steps: int | None = None,
    transitions: int = 200_000,
    seed: int = 0,
    train: bool = False,
    policies: Path | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Roll out the committed (or, with `train`, newly trained) SAC policies and write each requested kind."""
    _require_bench()
    if env not in ENVS:
        raise ValueError(f"unknown MuJoCo env {env!r}; choose one of {sorted(ENVS)}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown dataset kind(s) {unknown}; choose from {KINDS}")
    env_id = ENVS[env]
    base = root / env
    base.mkdir(parents=True, exist_ok=True)
    policy_path = (policies or POLICIES) / f"{env}.npz"
    record: dict[str, Any] = {
        "env_id": env_id,
        "seed": seed,
        "transitions": transitions,
        "sac": SACConfig().__dict__,
        "versions": _versions(),
        "timings_s": {},
        "returns": {},
        "datasets": {},
    }
    if train:
        started = time.perf_counter()
        expert = sac_steps if expert_steps is None else expert_steps
        record["policies"] = train_policies(env_id, policy_path, sac_steps, expert, seed, progress)
        record["timings_s"]["sac_train"] = round(time.perf_counter() - started, 1)
    elif not policy_path.exists():
        raise RuntimeError(
            f"{policy_path} not found: train the behaviour policies with `qipo data make {env} --train-sac`"
        )
    else:
        record["policies"] = {"policy_file": policy_path.name, "sha256": sha256_file(policy_path)}
    record["policies"]["snapshot_steps"] = _stored_steps(policy_path)
    episodes = _roll_out(env, policy_path, kinds, transitions, seed, progress, record)
    out = _write_kinds(root, env, kinds, episodes, record)
    (base / GENERATION_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _roll_out(
    env: str,
    policy_path: Path,
    kinds: tuple[str, ...],
    transitions: int,
    seed: int,
    progress: bool,
    record: dict[str, Any],
) -> dict[str, list[Episode]]:
    """The random, medium and expert rollouts (and the SAC snapshots' for medium-replay); their timings,
    mean returns and the own-score references go into `record`."""
    env_id = record["env_id"]
    marks = record["policies"]["snapshot_steps"]

    def timed_rollouts(name: str, actor: NumpyActor | None, n: int, offset: int) -> list[Episode]:
        started = time.perf_counter()
        eps = rollouts(env_id, actor, n, seed + offset, f"{env}/{name}", progress)
        record["timings_s"][f"{name}_rollouts"] = round(time.perf_counter() - started, 1)
        record["returns"][name] = mean_return(eps)
        return eps

    episodes = {
        "random": timed_rollouts("random", None, transitions, 0),
        "medium": timed_rollouts("medium", load_actor(policy_path, "medium"), transitions, 1_000_000),
        # The expert's return is the own-score reference (100) of every kind, so it is always rolled out.
        "expert": timed_rollouts(
            "expert", load_actor(policy_path, "expert"), transitions - transitions // 2, 2_000_000
        ),
        "medium-replay": [],
    }
    if "medium-replay" in kinds:
        episodes["medium-replay"] = replay_rollouts(env_id, policy_path, marks, seed, progress)
        record["returns"]["medium_replay"] = mean_return(episodes["medium-replay"])
    record["own_refs"] = {"random": record["returns"]["random"], "expert": record["returns"]["expert"]}
    return episodes


def _write_kinds(
    root: Path, env: str, kinds: tuple[str, ...], episodes: dict[str, list[Episode]], record: dict[str, Any]
) -> dict[str, Path]:
    """Each requested kind as a Minari dataset under `root`, described in `record["datasets"]`."""
    env_id, seed, transitions = record["env_id"], record["seed"], record["transitions"]
    marks = record["policies"]["snapshot_steps"]
    sac_total = marks["medium"]
    medium = episodes["medium"]
    chosen = {
        "random": (episodes["random"], f"uniform random, seed {seed}"),
        "medium": (medium[: _episodes_for(medium, transitions)], f"SAC {sac_total} steps"),
        "medium-replay": (episodes["medium-replay"], f"SAC snapshots over its first {sac_total} steps"),
        "medium-expert": (
            medium[: _episodes_for(medium, transitions // 2)] + episodes["expert"],
            f"SAC {sac_total} + {marks['expert']} steps",
        ),
    }
    out: dict[str, Path] = {}
    for kind in (k for k in KINDS if k in kinds):
        eps, algorithm = chosen[kind]
        out[kind] = write_minari(
            root,
            f"{env}/{kind}-v0",
            eps,
            env_id,
            algorithm=algorithm,
            description=f"{env_id} {kind}: {sum(len(e.actions) for e in eps)} transitions, "
            f"regenerate with `qipo data make {env} --seed {seed}`",
            ref_min_score=record["own_refs"]["random"],
            ref_max_score=record["own_refs"]["expert"],
        )
        record["datasets"][kind] = {
            "path": str(out[kind]),
            "episodes": len(eps),
            "transitions": int(sum(len(e.actions) for e in eps)),
            "mean_return": mean_return(eps),
        }
    return out


def _stored_steps(path: Path) -> dict[str, int]:
    with np.load(path, allow_pickle=False) as data:
        names = list(dict.fromkeys(k.split("/")[0] for k in data.files if "/" in k))
        steps = data["steps"].tolist()
    return dict(zip(names, steps, strict=True))


def replay_rollouts(
    env_id: str, policy_path: Path, marks: dict[str, int], seed: int, progress: bool
) -> list[Episode]:
    """Each replay snapshot rolled out for the steps SAC spent with it, in training order."""
    replay = sorted((step, name) for name, step in marks.items() if name.startswith("replay"))
    ends = [step for step, _ in replay[1:]] + [marks["medium"]]
    episodes: list[Episode] = []
    for (step, name), end in zip(replay, ends, strict=True):
        actor = load_actor(policy_path, name)
        episodes += rollouts(env_id, actor, end - step, seed + 3_000_000 + step, f"replay@{step}", progress)
    return episodes


def _episodes_for(episodes: list[Episode], transitions: int) -> int:
    """How many leading episodes reach `transitions` steps (whole episodes only)."""
    total = 0
    for i, ep in enumerate(episodes):
        total += len(ep.actions)
        if total >= transitions:
            return i + 1
    return len(episodes)
