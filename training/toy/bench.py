"""The toy benchmark: for every dataset and β, how far is each method's 10k-sample law from the exact
tilted law q ∝ p·exp(−βE), next to the distance between two independent exact samples (the floor).

Methods: `efm` (energy-weighted flow matching, OT path), `ed` (energy-weighted diffusion, VP path),
`cfm` (unguided flow matching: p itself, β-independent) and `cfg` (classifier-free-style mixture of an
unconditional and a β = 1 conditional field with guidance scale β). Per dataset: one CFG net (its label-0
branch is the `cfm` model) plus one EFM and one ED net per β.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from training.toy.checkpoint import Checkpoints, Resumed, Unit
from training.toy.datasets import DATASETS, get_dataset
from training.toy.exact import ResampleReport, sample_tilted
from training.toy.metrics import kernel_mean, mmd, sliced_wasserstein
from training.toy.models import (
    TOY_SIZES,
    ToyTrainConfig,
    make_path,
    sample_toy_model,
    train_toy_model,
)

METHODS = ("efm", "ed", "cfm", "cfg")
METHOD_LABELS = {"efm": "EFM", "ed": "ED", "cfg": "CFG-style", "cfm": "unguided p"}  # table, figure
Record = dict[str, Any]
DATASET_INDEX = {name: i for i, name in enumerate(DATASETS)}  # seeds follow the place in the full list
FIGURE_POINTS = 5000  # points per panel of toy.png, and what toy.samples.npz keeps to redraw it


@dataclass(frozen=True)
class BenchConfig:
    datasets: tuple[str, ...] = tuple(DATASETS)
    betas: tuple[float, ...] = (1.0, 3.0, 10.0)
    n_eval: int = 10_000  # model samples and exact samples per distance
    train_size: int = 1_000_000  # the offline "dataset" of p each model trains on (QGPO's size)
    projections: int = 512  # sliced Wasserstein directions (fixed, seeded)
    seed: int = 0
    methods: tuple[str, ...] = METHODS  # a subset trains fewer nets (e.g. `efm` alone for a capacity probe)
    exact_draws: int = 16  # fresh exact samples scored against each reference (the `*_exact` baseline)
    train: ToyTrainConfig = field(default_factory=ToyTrainConfig)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """CI size: ~10 s per dataset and β on one thread; distances on 2k samples (floor ~2× higher)."""
        small = ToyTrainConfig(steps=400, batch_size=512, ot_steps=30, vp_steps=10)
        quick = cls(n_eval=2000, train_size=100_000, projections=256, exact_draws=2, train=small)
        return replace(quick, **overrides)

    def __post_init__(self) -> None:
        for name in self.datasets:
            get_dataset(name)  # raises with the list of valid names
        if not self.betas or any(b <= 0 for b in self.betas):
            raise ValueError(f"betas must be positive, got {self.betas}")
        unknown = set(self.methods) - set(METHODS)
        if unknown or "efm" not in self.methods:
            raise ValueError(
                f"methods must include efm and come from {', '.join(METHODS)}, got {self.methods}"
            )
        if self.exact_draws < 1:
            raise ValueError(f"exact_draws must be at least 1, got {self.exact_draws}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_config(
    size: str = "small", quick: bool = False, train: dict[str, Any] | None = None, **overrides: Any
) -> BenchConfig:
    """What `qipo toy bench` runs: a named size from `TOY_SIZES` (or `quick`, the CI size), with the
    explicitly given training settings on top."""
    if size not in TOY_SIZES:
        raise ValueError(f"--size takes one of {', '.join(TOY_SIZES)}, got {size!r}")
    if quick and size != "small":
        raise ValueError("--quick sets its own CI size: drop --size or --quick")
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(train=TOY_SIZES[size], **overrides)
    return replace(config, train=replace(config.train, **(train or {})))


@dataclass
class BenchResult:
    records: list[Record]
    meta: dict[str, Any]
    figure_beta: float
    figure_samples: dict[str, dict[str, np.ndarray]]  # dataset -> column -> samples at figure_beta


Samples = dict[tuple[int, str], np.ndarray]  # (β index, method) -> model samples
Reference = tuple[np.ndarray, float, dict[str, float], ResampleReport]  # what `draw_reference` returns
FIGURE_METHODS = ("efm", "ed", "cfg")  # the figure's columns after exact q


def run_bench(
    config: BenchConfig,
    progress: bool = True,
    on_dataset: Callable[[BenchResult], object] | None = None,
    checkpoints: Path | None = None,
) -> BenchResult:
    """Train, sample and measure everything; deterministic for a given config and thread count.
    `on_dataset` gets the partial result after each dataset (the CLI writes it, so a long run that is
    stopped keeps what it finished); `checkpoints` keeps each finished model's records there, so a stopped
    run resumes at the next model with the same numbers (see `training.toy.checkpoint`)."""
    from tqdm.auto import tqdm

    cpu0, wall0 = time.process_time(), time.perf_counter()
    fig_beta = max(config.betas)
    guided = "cfm" in config.methods or "cfg" in config.methods  # both come from the one CFG pair
    kinds: tuple[Literal["ot", "vp"], ...] = ("ot", "vp") if "ed" in config.methods else ("ot",)  # EFM, ED
    per_beta = len(kinds)
    bar = tqdm(
        total=len(config.datasets) * (guided + per_beta * len(config.betas)),
        unit="model",
        disable=not progress,
    )
    saved, resumed = Checkpoints(checkpoints, config.as_dict()), Resumed()
    records: list[Record] = []
    resampling: dict[str, dict[str, Any]] = {}
    figure: dict[str, dict[str, np.ndarray]] = {}
    place = {(b, m): i for i, (b, m) in enumerate((b, m) for b in config.betas for m in METHODS)}

    for name in config.datasets:
        rng, data, energy = dataset_stream(config, name)
        refs = [draw_reference(config, name, bi, rng) for bi in range(len(config.betas))]
        for beta, ref in zip(config.betas, refs, strict=True):
            resampling[f"{name}@{beta:g}"] = ref[3].as_dict()
        models: list[tuple[str, str, Callable[[], Samples]]] = []  # (checkpoint unit, label, train + sample)
        if guided:
            models.append(("cfg", "cfg pair", partial(_cfg_pair, config, name, data, energy)))
        for bi, beta in enumerate(config.betas):
            for kind in kinds:
                method = "efm" if kind == "ot" else "ed"
                job = partial(_energy_weighted, config, name, data, energy, bi, kind)
                models.append((f"{method}@{beta:g}", f"{method} β={beta:g}", job))
        rows: list[Record] = []
        shown: dict[str, np.ndarray] = {}
        for unit, label, run in models:
            done = saved.load(name, unit)
            if done is None:
                bar.set_description(f"{name} {label}")
                started = time.process_time()
                samples = run()
                done = Unit(
                    [measure(config, name, bi, m, x, refs[bi]) for (bi, m), x in samples.items()],
                    {
                        m: x[:FIGURE_POINTS]
                        for (bi, m), x in samples.items()
                        if config.betas[bi] == fig_beta and m in FIGURE_METHODS
                    },
                    round(time.process_time() - started, 1),
                )
                saved.save(name, unit, done)
            else:
                resumed.add(done)
            rows += done.records
            shown |= done.figure
            bar.update(1)
        records += sorted(rows, key=lambda r: place[(r["beta"], r["method"])])  # the order of one full run
        figure[name] = {"exact q": refs[config.betas.index(fig_beta)][0]} | {
            METHOD_LABELS[m]: shown[m] for m in FIGURE_METHODS if m in shown
        }
        if on_dataset is not None:
            on_dataset(
                BenchResult(records, _meta(config, resampling, cpu0, wall0, resumed), fig_beta, figure)
            )
    bar.close()
    saved.clear()
    return BenchResult(records, _meta(config, resampling, cpu0, wall0, resumed), fig_beta, figure)


def _cfg_pair(config: BenchConfig, name: str, data: np.ndarray, energy: np.ndarray) -> Samples:
    """The CFG pair: its label-0 branch is unguided p ("cfm", the same samples at every β) and its mixture
    at guidance β is "cfg"."""
    tc, seed = config.train, dataset_seed(config, name)
    model = train_toy_model(data, energy, make_path("ot"), 1.0, tc, seed, "cfg")
    p_samples = sample_toy_model(model, config.n_eval, tc.ot_steps, seed + 1)
    out: Samples = {}
    for bi, beta in enumerate(config.betas):
        guided = sample_toy_model(model, config.n_eval, tc.ot_steps, beta_seed(config, name, bi) + 4, beta)
        out |= {(bi, "cfm"): p_samples, (bi, "cfg"): guided}
    return out


def _energy_weighted(
    config: BenchConfig, name: str, data: np.ndarray, energy: np.ndarray, bi: int, kind: Literal["ot", "vp"]
) -> Samples:
    """EFM (OT path, Euler) or energy-weighted diffusion (VP path, DPM-Solver-2) at β index `bi`."""
    tc = config.train
    seed = beta_seed(config, name, bi) + (kind == "vp")
    model = train_toy_model(data, energy, make_path(kind), config.betas[bi], tc, seed, "efm")
    steps = tc.ot_steps if kind == "ot" else tc.vp_steps
    return {(bi, "efm" if kind == "ot" else "ed"): sample_toy_model(model, config.n_eval, steps, seed + 2)}


def measure(
    config: BenchConfig, name: str, bi: int, method: str, samples: np.ndarray, reference: Reference
) -> Record:
    """One record: the distances of a method's samples at β index `bi` to that β's reference, next to
    what an exact sample scores (the floor and exact columns)."""
    ref, kyy, baseline, _ = reference
    return {
        "dataset": name,
        "beta": config.betas[bi],
        "method": method,
        "swd": sliced_wasserstein(samples, ref, config.projections),
        "mmd": mmd(samples, ref, yy=kyy),
        **baseline,
    }


def dataset_stream(config: BenchConfig, name: str) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """A dataset's seeded stream and the training sample of p that opens it; the references are drawn
    from the same stream next. Seeded by the dataset's place in the full list, so a subset run (--datasets)
    draws the same data, exact samples and floor as the full bench, and a replay finds the same references."""
    rng = np.random.default_rng([config.seed, DATASET_INDEX[name]])
    data, energy = get_dataset(name).sample(config.train_size, rng)
    return rng, data, energy


def dataset_seed(config: BenchConfig, name: str) -> int:
    """The torch seed of a dataset's CFG pair (its samples take +1)."""
    return 10_000 * config.seed + 100 * DATASET_INDEX[name]


def beta_seed(config: BenchConfig, name: str, bi: int) -> int:
    """The seed of β index `bi`'s EFM net (ED: +1; their samples +2; the CFG mixture's samples +4)."""
    return dataset_seed(config, name) + 10 * (bi + 1)


def draw_reference(config: BenchConfig, name: str, bi: int, rng: np.random.Generator) -> Reference:
    """The reference sample of q for (dataset, β index) and what an exact sampler scores against it.

    `*_floor`: one other draw of the same resampling pool (the original floor). `*_exact`: the mean over
    `exact_draws` fresh exact samples, each from its own pool and its own seeded stream, so `rng` (and
    every seed after it) is unchanged. The mean is the fair yardstick: a single reference can sit far from
    q itself (8gaussians β = 3 at seed 0 is 2.5σ short in its largest mode: fresh exact samples land 0.036
    from it on average, its one-draw floor is 0.029)."""
    ds, n, beta = get_dataset(name), config.n_eval, config.betas[bi]
    q, report = sample_tilted(ds, beta, 2 * n, rng)
    ref, other = q[:n], q[n:]
    kyy = kernel_mean(ref)
    baseline = {
        "swd_floor": sliced_wasserstein(other, ref, config.projections),
        "mmd_floor": mmd(other, ref, yy=kyy),
    }
    fresh_rng = np.random.default_rng([config.seed, DATASET_INDEX[name], bi, 1])
    fresh = [sample_tilted(ds, beta, n, fresh_rng)[0] for _ in range(config.exact_draws)]
    baseline["swd_exact"] = float(np.mean([sliced_wasserstein(x, ref, config.projections) for x in fresh]))
    baseline["mmd_exact"] = float(np.mean([mmd(x, ref, yy=kyy) for x in fresh]))
    return ref, kyy, baseline, report


def add_exact_baseline(records: list[Record], meta: dict[str, Any], draws: int) -> list[Record]:
    """Give the records of an earlier run their `*_exact` baseline without retraining any model: each
    reference is replayed from its seeds, and a replay whose one-draw floor differs from the stored one is
    refused (the records would then describe another reference)."""
    c = meta["config"]
    config = BenchConfig(
        datasets=tuple(c["datasets"]),
        betas=tuple(c["betas"]),
        n_eval=c["n_eval"],
        train_size=c["train_size"],
        projections=c["projections"],
        seed=c["seed"],
        exact_draws=draws,
    )
    out = [dict(r) for r in records]
    for name in config.datasets:
        rng, _, _ = dataset_stream(config, name)
        for bi, beta in enumerate(config.betas):
            _, _, baseline, _ = draw_reference(config, name, bi, rng)
            rows = [r for r in out if r["dataset"] == name and r["beta"] == beta]
            if not rows or any(abs(r["swd_floor"] - baseline["swd_floor"]) > 1e-5 for r in rows):
                raise ValueError(
                    f"cannot replay the reference of {name} β={beta:g} (floor differs from the records): "
                    "rerun the bench instead"
                )
            for r in rows:
                r |= baseline
    return out


def _meta(
    config: BenchConfig, resampling: dict[str, Any], cpu0: float, wall0: float, resumed: Resumed
) -> dict[str, Any]:
    """Setup and cost of a run. `cpu_seconds` counts the models taken over from checkpoints too (their own
    time, from the sitting that trained them); `wall_seconds` is this sitting's alone."""
    return {
        "config": config.as_dict(),
        "exact_sampler": {
            "method": "importance resampling of a p-sample of size `pool` (doubled until ESS >= 20 x draws)",
            "per_dataset_beta": resampling,
        },
        "metrics": {
            "swd": f"sliced W1, {config.projections} fixed random directions (seed 0)",
            "mmd": "sqrt of biased MMD^2, Gaussian kernel bandwidth 0.3",
            "floor": f"distance between two independent exact samples of {config.n_eval}",
        },
        "cpu_seconds": round(time.process_time() - cpu0 + resumed.cpu_seconds, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        **resumed.as_meta(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.1f}×" if floor > 0 else "–"


def _index(records: list[Record]) -> dict[tuple[str, float, str], Record]:
    return {(r["dataset"], r["beta"], r["method"]): r for r in records}


def checks(records: list[Record]) -> dict[str, list[str]]:
    """The toy bench's claims, evaluated: which (dataset, β) pass and which do not, per claim."""
    idx = _index(records)
    keys = sorted({(r["dataset"], r["beta"]) for r in records}, key=lambda k: (k[0], k[1]))
    out: dict[str, list[str]] = {
        "efm_within_2x_floor": [],
        "efm_within_2x_exact": [],
        "efm_beats_p": [],
        "efm_beats_cfg_at_max_beta": [],
    }
    failures: dict[str, list[str]] = {k: [] for k in out}
    max_beta = max(k[1] for k in keys)
    for name, beta in keys:
        e = idx[(name, beta, "efm")]
        tag = f"{name} β={beta:g}"
        (out if e["swd"] <= 2 * e["swd_floor"] else failures)["efm_within_2x_floor"].append(tag)
        if "swd_exact" in e:  # runs before the exact-draw baseline have the one-draw floor only
            (out if e["swd"] <= 2 * e["swd_exact"] else failures)["efm_within_2x_exact"].append(tag)
        if (name, beta, "cfm") not in idx:  # an EFM-only run: nothing to compare with
            continue
        (out if e["swd"] < idx[(name, beta, "cfm")]["swd"] else failures)["efm_beats_p"].append(tag)
        if beta == max_beta:
            (out if e["swd"] < idx[(name, beta, "cfg")]["swd"] else failures)[
                "efm_beats_cfg_at_max_beta"
            ].append(tag)
    return {**{f"{k}:pass": v for k, v in out.items()}, **{f"{k}:fail": v for k, v in failures.items()}}


def markdown(records: list[Record], meta: dict[str, Any]) -> str:
    """toy.md: the SWD and MMD tables (value and ratio to the exact-draw baseline, or to the floor in
    runs that predate it), the checks and the setup."""
    exact = all("swd_exact" in r for r in records)
    lines = [
        "# EFM exactness on 2-D toys",
        "",
        "Distance from each method's samples to a reference sample of exact q ∝ p·exp(−βE); *floor* is the "
        "distance of one other exact sample (drawn from the same resampling pool) to that reference.",
        "",
    ]
    if exact:
        draws = meta["config"]["exact_draws"]
        lines += [
            f"*exact* is the mean distance of {draws} fresh exact samples (each from its own pool) to the "
            "same reference: what an exact sampler scores against it. Ratios to *exact* in parentheses; "
            "1.0× is as good as it gets. The one-draw floor can sit far below it when the reference "
            "itself is an unlucky draw, so *exact* is the yardstick.",
            "",
        ]
    else:
        lines += ["Ratios to the floor in parentheses; 1.0× is as good as it gets.", ""]
    for metric, title in (
        ("swd", "Sliced Wasserstein-1"),
        ("mmd", "MMD (√ biased MMD², Gaussian kernel h = 0.3)"),
    ):
        lines += _metric_table(records, metric, title, exact)
    lines += _claim_lines(records)
    lines += _setup_lines(meta)
    return "\n".join([*lines, ""])


def _metric_table(records: list[Record], metric: str, title: str, exact: bool) -> list[str]:
    """One metric's table: per (dataset, β) the floor, the exact baseline and each method with its ratio."""
    idx = _index(records)
    keys = list(dict.fromkeys((r["dataset"], r["beta"]) for r in records))
    shown = [m for m in ("efm", "ed", "cfg", "cfm") if any(r["method"] == m for r in records)]
    lines = [
        f"## {title}",
        "",
        "| dataset | β | floor | "
        + ("exact | " if exact else "")
        + " | ".join(METHOD_LABELS[m] for m in shown)
        + " |",
        "|---|---|---" + "|---" * (len(shown) + exact) + "|",
    ]
    for name, beta in keys:
        e = idx[(name, beta, "efm")]
        base = e[f"{metric}_exact"] if exact else e[f"{metric}_floor"]
        cells = [f"{e[f'{metric}_floor']:.3f}"] + ([f"{base:.3f}"] if exact else [])
        cells += [
            f"{idx[(name, beta, m)][metric]:.3f} ({_ratio(idx[(name, beta, m)][metric], base)})"
            for m in shown
        ]
        lines.append(f"| {name} | {beta:g} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _claim_lines(records: list[Record]) -> list[str]:
    result = checks(records)
    lines = ["## Claims, checked on SWD", ""]
    for claim, text in (
        ("efm_within_2x_floor", "EFM within 2× of the one-draw floor"),
        ("efm_within_2x_exact", "EFM within 2× of an exact sample (mean of fresh draws)"),
        ("efm_beats_p", "EFM closer to q than unguided p"),
        ("efm_beats_cfg_at_max_beta", "EFM closer to q than CFG-style at the largest β"),
    ):
        ok, bad = result[f"{claim}:pass"], result[f"{claim}:fail"]
        if not ok and not bad:
            continue
        lines.append(
            f"- {text}: {len(ok)}/{len(ok) + len(bad)}" + (f"; not on: {', '.join(bad)}" if bad else "")
        )
    return lines


def _setup_lines(meta: dict[str, Any]) -> list[str]:
    cfg = meta["config"]
    tc = cfg["train"]
    lines = [
        "",
        "## Setup",
        "",
        f"- {cfg['n_eval']:,} model samples vs {cfg['n_eval']:,} exact samples; {meta['metrics']['swd']}; "
        f"{meta['metrics']['mmd']}.",
        f"- Each model: VelocityNet (hidden {tc['hidden']}, {tc['blocks']} residual block(s)), "
        f"{tc['steps']:,} Adam steps at batch {tc['batch_size']:,}, lr {tc['lr']:g} cosine-decayed, "
        f"on a fixed sample of {cfg['train_size']:,} points of p, on {tc.get('device', 'cpu')}. "
        f"EFM/CFG: {tc['ot_steps']} Euler steps; ED: {tc['vp_steps']} DPM-Solver-2 steps.",
        "- Exact q: importance resampling of a large p-sample; pool size and ESS per dataset and β in "
        "`toy.meta.json` (ESS ≥ 20× the draws, or the pool cap).",
        f"- {meta['cpu_seconds']:.0f} s CPU ({meta['wall_seconds']:.0f} s wall) on "
        f"{meta['torch_threads']} torch thread(s), torch {meta['torch']}, created {meta['created_at']}.",
    ]
    if meta.get("resumed_models"):
        n, untimed = meta["resumed_models"], meta.get("untimed_models", 0)
        notes = []
        if n > untimed:
            notes.append(f"the CPU time includes the {meta['resumed_cpu_seconds']:.0f} s they took")
        if untimed:
            notes.append(f"{untimed} were saved without a time, so their CPU is not counted")
        lines.append(
            f"- {n} model(s) resumed from checkpoints of an earlier sitting: {'; '.join(notes)}; "
            "the wall time leaves them out."
        )
    if "shards" in meta:
        runs = "; ".join(f"`{s['dir']}`: {', '.join(s['datasets'])}" for s in meta["shards"])
        n = len(meta["shards"])
        lines.append(f"- Merged from {n} run{'s' * (n > 1)} of dataset subsets ({runs}); times are summed.")
    left = [d for d in DATASETS if d not in cfg["datasets"]]
    if left:
        lines.append(f"- Not yet run at this size: {', '.join(left)}.")
    return lines


def plot(result: BenchResult, path: Path) -> None:
    """toy.png: rows datasets; columns exact q, EFM, ED, CFG-style at the largest β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.figure_samples)
    cols = list(next(iter(result.figure_samples.values()), {}))
    fig, axes = plt.subplots(
        len(names), len(cols), figsize=(2.4 * len(cols), 2.4 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        ext = get_dataset(name).extent
        for j, col in enumerate(cols):
            ax = axes[i][j]
            pts = result.figure_samples[name][col][:FIGURE_POINTS]
            ax.scatter(
                pts[:, 0], pts[:, 1], s=0.3, alpha=0.4, color="C0" if j == 0 else f"C{j}", rasterized=True
            )
            ax.set_xlim(-ext, ext)
            ax.set_ylim(-ext, ext)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(col)
            if j == 0:
                ax.set_ylabel(name)
    fig.suptitle(f"β = {result.figure_beta:g}: q ∝ p·exp(−βE)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tables(records: list[Record], meta: dict[str, Any], out: Path) -> dict[str, Path]:
    """DIR/toy.json (records, floats to 6 places), toy.meta.json and toy.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "toy.json", "meta": out / "toy.meta.json", "md": out / "toy.md"}
    clean = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in records]
    paths["json"].write_text(json.dumps(clean, indent=1) + "\n")
    paths["meta"].write_text(json.dumps(meta, indent=1) + "\n")
    paths["md"].write_text(markdown(records, meta))
    return paths


def write_outputs(result: BenchResult, out: Path, samples: bool = True) -> dict[str, Path]:
    """DIR/toy.json (the records), toy.meta.json (setup, exact-sampler ESS, timing), toy.md, toy.png and,
    with `samples`, toy.samples.npz (the plotted points, float16, so `qipo toy merge` can redraw the figure
    from shards; a merge itself has no need to keep a second copy)."""
    paths = write_tables(result.records, result.meta, out) | {"png": out / "toy.png"}
    plot(result, paths["png"])
    if not samples:
        return paths
    paths["samples"] = out / "toy.samples.npz"
    points: dict[str, Any] = {
        f"{name}/{col}": np.asarray(pts[:FIGURE_POINTS], dtype=np.float16)
        for name, cols in result.figure_samples.items()
        for col, pts in cols.items()
    }
    np.savez_compressed(paths["samples"], **points)
    return paths


def _shard_config(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta["config"].items() if k != "datasets"}


def merge_shards(shards: list[Path]) -> BenchResult:
    """One result from runs of dataset subsets (`qipo toy bench --datasets X` per core or machine): the
    rows are the full bench's because each dataset's seeds follow its place in the full list. Shards must
    share every setting but the datasets; each dataset may come from one shard only."""
    if not shards:
        raise ValueError("give at least one shard directory (each written by `qipo toy bench --out DIR`)")
    records: list[Record] = []
    figure: dict[str, dict[str, np.ndarray]] = {}
    metas: list[dict[str, Any]] = []
    for shard in shards:
        files = [shard / f for f in ("toy.json", "toy.meta.json", "toy.samples.npz")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{shard} is not a finished toy shard (missing {', '.join(missing)}); rerun it")
        meta = json.loads(files[1].read_text())
        if metas and _shard_config(meta) != _shard_config(metas[0]):
            mine, first = _shard_config(meta), _shard_config(metas[0])
            keys = sorted(k for k in mine.keys() | first.keys() if mine.get(k) != first.get(k))
            raise ValueError(
                f"{shard} was run with other settings than {shards[0]} ({', '.join(keys)}): merge like with "
                "like (`qipo toy exact` gives older runs the exact_draws baseline)"
            )
        rows = json.loads(files[0].read_text())
        clash = {r["dataset"] for r in rows} & {r["dataset"] for r in records}
        if clash:
            raise ValueError(f"{shard} repeats dataset(s) {', '.join(sorted(clash))}: give each once")
        records += rows
        metas.append(meta)
        with np.load(files[2]) as points:
            for key in points.files:
                name, col = key.split("/", 1)
                figure.setdefault(name, {})[col] = points[key].astype(np.float32)
    records.sort(
        key=lambda r: DATASET_INDEX[r["dataset"]]
    )  # stable: β and method order kept within a dataset
    datasets = sorted({r["dataset"] for r in records}, key=DATASET_INDEX.__getitem__)
    first = metas[0]
    meta = first | {
        "config": first["config"] | {"datasets": datasets},
        "exact_sampler": first["exact_sampler"]
        | {
            "per_dataset_beta": {
                k: v for m in metas for k, v in m["exact_sampler"]["per_dataset_beta"].items()
            }
        },
        "cpu_seconds": round(sum(m["cpu_seconds"] for m in metas), 1),
        "wall_seconds": round(sum(m["wall_seconds"] for m in metas), 1),
        **{k: round(sum(m.get(k, 0) for m in metas), 1) for k in Resumed().as_meta()},
        "created_at": max(m["created_at"] for m in metas),
        "shards": [
            {"dir": s.name, "datasets": m["config"]["datasets"]} for s, m in zip(shards, metas, strict=True)
        ],
    }
    fig_beta = max(first["config"]["betas"])
    return BenchResult(records, meta, fig_beta, {n: figure[n] for n in datasets if n in figure})


def finite(records: list[Record]) -> bool:
    return all(math.isfinite(r[k]) for r in records for k in ("swd", "mmd", "swd_floor", "mmd_floor"))
