"""The resumable grid runner: one JSON record per (algo, env, dataset, seed), written when its run finishes.

A `qipo-ot` run is one QIPOTrainer with the library defaults (plus `--set` overrides and `--steps`
scaling). It yields three records: `bc` (its behaviour warm-up, evaluated during and at the end of K1),
`qipo-ot` (one policy sample per state, evaluated during K3) and `qipo-ot-bon` (best-of-N by Q at the
same steps); with an `action_noise` below 1 also `bc-noise1` and `qipo-ot-noise1`. The d3rlpy peers
train for the same total number of gradient steps (K1 + K2 + K3). Every evaluation uses
`training.eval.evaluate` with the same episodes and env seeds for every algorithm.

A run whose record exists is skipped, so an interrupted grid resumes where it stopped, and separate
processes with disjoint selections can fill one output folder.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qipo_client.policy import Policy

from training.bench import cpu_model
from training.bench.peers import PEERS, d3rlpy_version, peer_algo, train_peer
from training.config import QIPOConfig
from training.data import TransitionDataset, load_dataset
from training.data.suite import FAMILIES, SuiteError, check_kinds
from training.eval import evaluate
from training.qipo import QIPOTrainer

QIPO = "qipo-ot"
ALGOS: tuple[str, ...] = (QIPO, *PEERS)  # what a run trains
FULL_NOISE = {"bc": "bc-noise1", QIPO: "qipo-ot-noise1"}  # one sample per state at action_noise 1
# table order: each full-noise column beside its default
RECORD_ALGOS: tuple[str, ...] = ("bc", FULL_NOISE["bc"], QIPO, FULL_NOISE[QIPO], "qipo-ot-bon", *PEERS)
# Every dataset kind of the suite (training.data.suite), in table order; each env's defaults are its `grid`.
DATASETS: tuple[str, ...] = tuple(dict.fromkeys(k for f in FAMILIES.values() for k in (*f.grid, *f.kinds)))
STEP_FIELDS = ("behavior_steps", "critic_steps", "improve_steps")  # K1, K2, K3: the budget `--steps` scales
EVAL_SEED_BASE = 10_000  # env seeds of training seed s: 10_000 + 100·s + episode (as scripts/bench_rl.py)
QUICK_STEPS = 60
LOG_FIELDS = ("algo", "env", "dataset", "seed", "steps", "final_return", "normalized_d4rl_style", "wall_s")
Record = dict[str, Any]


class GridError(RuntimeError):
    """The grid cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class GridSettings:
    """What every run of one invocation shares."""

    episodes: int = 10
    evals: int = 5  # evaluation points per curve, evenly spaced over the phase that changes the policy
    steps: int | None = None  # total gradient steps per run; None: K1 + K2 + K3 of the QIPO config
    overrides: dict[str, Any] = field(default_factory=dict)  # merged into every QIPOConfig
    command: str = ""
    quick: bool = False

    @classmethod
    def smoke(cls, **changes: Any) -> GridSettings:
        """`--quick`: a few dozen steps, 2 episodes, 2 evaluation points: tests plumbing, not the method."""
        return cls(**({"episodes": 2, "evals": 2, "steps": QUICK_STEPS, "quick": True} | changes))


@dataclass(frozen=True)
class RunSpec:
    algo: str
    env: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.algo} {self.env}/{self.dataset} seed {self.seed}"


def record_path(out: Path, algo: str, env: str, dataset: str, seed: int) -> Path:
    return out / f"{env}__{dataset}__{algo}__seed{seed}.json"


def is_done(spec: RunSpec, out: Path) -> bool:
    """A QIPO run is done when its `qipo-ot` record exists (written last, after `bc`)."""
    return record_path(out, spec.algo, spec.env, spec.dataset, spec.seed).exists()


def plan(
    algos: Iterable[str], envs: Iterable[str], datasets: Iterable[str] | None, seeds: Iterable[int]
) -> list[RunSpec]:
    """Every combination, env-major, so one env's grid fills before the next starts. `datasets` None: each
    env's own suite datasets (`training.data.suite.FAMILIES[env].grid`)."""
    for algo in algos:
        if algo not in ALGOS:
            raise GridError(f"unknown algo {algo!r}; choose from {list(ALGOS)} (bc comes with qipo-ot)")
    envs, chosen = list(envs), None if datasets is None else list(datasets)
    per_env: dict[str, list[str]] = {}
    for env in envs:
        try:
            kinds = list(FAMILIES[env].grid) if env in FAMILIES and chosen is None else chosen or []
            check_kinds(env, kinds)
        except SuiteError as exc:
            raise GridError(str(exc)) from exc
        per_env[env] = kinds
    return [
        RunSpec(algo, env, dataset, seed)
        for env in envs
        for dataset in per_env[env]
        for seed in seeds
        for algo in algos
    ]


def budget(cfg: QIPOConfig) -> int:
    return int(sum(getattr(cfg, name) for name in STEP_FIELDS))


def scale_budget(cfg: QIPOConfig, total: int) -> QIPOConfig:
    """K1, K2, K3 and the renewal period scaled together so that K1 + K2 + K3 = `total`."""
    if total < len(STEP_FIELDS):
        raise GridError(f"--steps must be at least {len(STEP_FIELDS)} (one per phase), got {total}")
    factor = total / budget(cfg)
    steps = {
        name: max(1, round(getattr(cfg, name) * factor)) for name in STEP_FIELDS[1:] if getattr(cfg, name)
    }
    steps[STEP_FIELDS[0]] = total - sum(steps.values())  # the warm-up takes the rounding remainder
    renew = max(1, round(cfg.renew_every * factor))
    return QIPOConfig.model_validate(cfg.model_dump() | steps | {"renew_every": renew})


def qipo_config(seed: int, settings: GridSettings) -> QIPOConfig:
    """The library defaults, the `--set` overrides, then the `--steps` scaling."""
    cfg = QIPOConfig.model_validate({"seed": seed, "variant": QIPO} | settings.overrides)
    return cfg if settings.steps is None else scale_budget(cfg, settings.steps)


def eval_steps(start: int, end: int, n: int) -> list[int]:
    """`n` evenly spaced steps in (start, end], the last one `end` (fewer when the range is shorter)."""
    return sorted({start + round((end - start) * i / n) for i in range(1, n + 1)} - {start})


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write next to `path` and rename, so a reader (or a resumed grid) never sees half a record."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


@dataclass
class Evaluator:
    """`training.eval.evaluate` on one dataset's env with fixed env seeds; keeps its own wall time apart."""

    data: TransitionDataset
    episodes: int
    seed: int
    seconds: float = 0.0

    @property
    def env_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))

    def __call__(self, step: int, policy: Policy) -> Record:
        started = time.perf_counter()
        refs = self.data.ref_scores
        own = (refs["ref_min_score"], refs["ref_max_score"]) if len(refs) == 2 else None
        assert self.data.env_id is not None  # checked when the dataset is loaded
        result = evaluate(policy, self.data.env_id, self.episodes, self.seed, progress=False, own_refs=own)
        self.seconds += time.perf_counter() - started
        return {
            "step": step,
            "return": result["mean_return"],
            "std_return": result["std_return"],
            "normalized_own": result["normalized_score"],
            "normalized_d4rl_style": result["d4rl_style_score"],
        }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present and len(present) == len(values) else None


def make_record(
    spec: RunSpec, algo: str, steps: int, curve: list[Record], wall_s: float, config: Record, ev: Evaluator
) -> Record:
    """The record of one evaluated policy: final = last curve point, last3 = mean of the last three."""
    final, tail = curve[-1], curve[-3:]
    return {
        "algo": algo,
        "env": spec.env,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "steps": steps,
        "final_return": final["return"],
        "last3_return": _mean([p["return"] for p in tail]),
        "normalized_own": final["normalized_own"],
        "normalized_d4rl_style": final["normalized_d4rl_style"],
        "last3_normalized_own": _mean([p["normalized_own"] for p in tail]),
        "last3_normalized_d4rl_style": _mean([p["normalized_d4rl_style"] for p in tail]),
        "wall_s": round(wall_s, 1),
        "config": config,
        "curve": curve,
        "eval_seeds": ev.env_seeds,
        "episodes": ev.episodes,
        "env_id": ev.data.env_id,
        "dataset_sha256": ev.data.fingerprint(),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {cpu_model()}, torch {torch.__version__}",
    }


def run_qipo(spec: RunSpec, data: TransitionDataset, settings: GridSettings) -> list[Record]:
    """One QIPO-OT run → the `bc`, `qipo-ot` and (when the trainer offers it) `qipo-ot-bon` records, plus
    `bc-noise1` and `qipo-ot-noise1` when the config acts at an `action_noise` below 1."""
    cfg = qipo_config(spec.seed, settings)
    trainer = QIPOTrainer(data, cfg, progress=False)
    ev = Evaluator(data, settings.episodes, EVAL_SEED_BASE + 100 * spec.seed)
    k1, k2, total = trainer.k1, trainer.k2, trainer.total_steps
    warmup_at, improve_at = (
        set(eval_steps(0, k1, settings.evals)),
        set(eval_steps(k1 + k2, total, settings.evals)),
    )
    curves: dict[str, list[Record]] = {
        "bc": [],
        QIPO: [],
        "qipo-ot-bon": [],
        **{a: [] for a in FULL_NOISE.values()},
    }
    full_noise_too = cfg.action_noise != 1  # then the same policies are also scored at full noise

    def evaluate_samples(step: int, algo: str) -> None:
        """One sample per state at the config's `action_noise` (and at 1 beside it, to measure the scale)."""
        curves[algo].append(ev(step, trainer.policy("sample")))
        if full_noise_too:
            curves[FULL_NOISE[algo]].append(ev(step, trainer.policy("sample", noise_scale=1.0)))

    def on_step(step: int) -> None:
        if step in warmup_at:
            evaluate_samples(step, "bc")
        if step in improve_at:
            evaluate_samples(step, QIPO)
            bon = trainer.policy("best-of-n")
            curves["qipo-ot-bon"].append(ev(step, bon))

    started = time.perf_counter()
    trainer.fit(until=k1, on_step=on_step)
    warmup_s = time.perf_counter() - started - ev.seconds
    trainer.fit(on_step=on_step)
    total_s = time.perf_counter() - started - ev.seconds
    config = cfg.model_dump(mode="json")
    schedule = {"k1": k1, "k2": k2, "k3": trainer.k3}
    records = []
    for algo, steps, seconds, selection, noise in (
        ("bc", k1, warmup_s, "sample", cfg.action_noise),
        (QIPO, total, total_s, "sample", cfg.action_noise),
        ("qipo-ot-bon", total, total_s, "best-of-n", 1.0),
        (FULL_NOISE["bc"], k1, warmup_s, "sample", 1.0),
        (FULL_NOISE[QIPO], total, total_s, "sample", 1.0),
    ):
        if curves[algo]:  # empty only when its phase has no steps (or its scale is the default's)
            rec = make_record(spec, algo, steps, curves[algo], seconds, config, ev)
            rec |= {"schedule": schedule, "selection": selection, "action_noise": noise}
            extra = {"renewal_s": trainer.renewal_s, "diagnostics": trainer.summary()}
            warmup = algo in ("bc", FULL_NOISE["bc"])  # no critic or renewals yet
            records.append(rec if warmup else rec | extra)
    return records


def run_peer(spec: RunSpec, data: TransitionDataset, settings: GridSettings) -> list[Record]:
    """One d3rlpy run for the QIPO run's total budget, evaluated at evenly spaced steps."""
    steps = budget(qipo_config(spec.seed, settings))
    ev = Evaluator(data, settings.episodes, EVAL_SEED_BASE + 100 * spec.seed)
    at = set(eval_steps(0, steps, settings.evals))
    curve: list[Record] = []

    def on_step(step: int, policy: Policy) -> None:
        if step in at:
            curve.append(ev(step, policy))

    algo = peer_algo(spec.algo)
    started = time.perf_counter()
    config = train_peer(algo, data, steps, spec.seed, on_step, f"{spec.env}-{spec.dataset}")
    wall_s = time.perf_counter() - started - ev.seconds
    return [make_record(spec, spec.algo, steps, curve, wall_s, config, ev)]


def dataset_path(root: Path, env: str, dataset: str) -> Path:
    return root / env / f"{dataset}-v0"


def run_grid(
    specs: list[RunSpec],
    data_root: Path,
    out: Path,
    settings: GridSettings,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run every spec whose record is missing; returns the records written."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not is_done(s, out)]
    for spec in specs:
        if spec not in todo:
            log(f"skip {spec.name}: {record_path(out, spec.algo, spec.env, spec.dataset, spec.seed)} exists")
    missing = sorted({str(p) for s in todo if not (p := dataset_path(data_root, s.env, s.dataset)).exists()})
    if missing:
        raise GridError(
            f"dataset(s) not found: {', '.join(missing)}; "
            f"make them with `qipo data make ENV --out {data_root}`"
        )
    if any(s.algo in PEERS for s in todo):
        try:
            d3rlpy_version()
        except RuntimeError as exc:
            raise GridError(str(exc)) from exc
    loaded: dict[tuple[str, str], TransitionDataset] = {}
    written: list[Path] = []
    for spec in todo:
        key = (spec.env, spec.dataset)
        if key not in loaded:
            loaded[key] = load_dataset(dataset_path(data_root, *key))
            if loaded[key].env_id is None:
                raise GridError(f"{dataset_path(data_root, *key)} names no env: evaluation needs one")
        data = loaded[key]
        records = run_qipo(spec, data, settings) if spec.algo == QIPO else run_peer(spec, data, settings)
        for rec in sorted(records, key=lambda r: r["algo"] == spec.algo):  # the run's own record last
            rec |= {
                "quick": settings.quick,
                "command": settings.command,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            path = record_path(out, rec["algo"], spec.env, spec.dataset, spec.seed)
            write_json_atomic(path, rec)
            written.append(path)
            log(json.dumps({k: rec[k] for k in LOG_FIELDS}))
    return written
