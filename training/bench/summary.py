"""rl.{json,md,png} from a folder of grid records: mean ± std over seeds per (env, dataset, algo) cell.

Scores are those of each run's final policy (the last curve point); the mean over the grid is the mean of
an algorithm's cell means. Because a grid may be filled over several sittings, the summary also gives each
algorithm's mean over the cells that every algorithm has, the only fair comparison of incomplete grids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from training.bench.grid import DATASETS, FULL_NOISE, QIPO, RECORD_ALGOS, Record
from training.data.suite import FAMILIES

SCORES = {"normalized_d4rl_style": "D4RL-style", "normalized_own": "own"}
METRICS = (*SCORES, "final_return", "last3_return")
ALGO_LABELS = {
    "bc": "BC (QIPO warm-up)",
    "qipo-ot": "QIPO-OT",
    "qipo-ot-bon": "QIPO-OT best-of-N",
    "iql": "IQL (d3rlpy)",
    "td3bc": "TD3+BC (d3rlpy)",
    "rebrac": "ReBRAC (d3rlpy, tuned)",
    "bc-mse": "BC, deterministic MSE (d3rlpy)",
    "bc-noise1": "BC, full noise",
    "qipo-ot-noise1": "QIPO-OT, full noise",
}
# Seed-by-seed comparisons of records from the same run: (algo, base, what the pairing says).
PAIRS: tuple[tuple[str, str, str], ...] = (
    (
        "qipo-ot",
        "bc",
        "Both come from the same run (the BC is its warm-up), so each seed is a paired comparison.",
    ),
    (
        "qipo-ot",
        "bc-noise1",
        "The same runs, against the warm-up acting at full noise: the stronger BC on multimodal data, where "
        "less noise lands between the modes.",
    ),
    (
        "qipo-ot",
        "qipo-ot-noise1",
        "One policy acting at the default `action_noise` and at full noise: what the scale buys.",
    ),
)
Stats = dict[str, float]
CELL_FLAGS = {"--envs": "ENV", "--datasets": "DATASET", "--algos": "ALGO", "--seeds": "SEED"}


def load_records(folder: Path) -> list[Record]:
    """Every `*.json` record in `folder`, in name order."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder of run records; run `scripts/bench_grid.py run` first"
        )
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); delete it and rerun that cell") from exc
    return records


def stats(values: list[float | None]) -> Stats | None:
    """Mean and (population) std over seeds; None when no seed has a value."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if not len(present):
        return None
    return {"mean": float(present.mean()), "std": float(present.std()), "n": len(present)}


def _order(env: str, dataset: str) -> tuple[int, int, str, str]:
    envs, kinds = list(FAMILIES), list(DATASETS)
    return (
        envs.index(env) if env in envs else len(envs),
        kinds.index(dataset) if dataset in kinds else len(kinds),
        env,
        dataset,
    )


def _datasets(records: list[Record]) -> list[tuple[str, str]]:
    """The (env, dataset) pairs present, in table order: known envs and kinds first, as listed."""
    return sorted({(r["env"], r["dataset"]) for r in records}, key=lambda k: _order(*k))


def summarise(records: list[Record]) -> dict[str, Any]:
    """Cells, the best algorithm per row and score, per-algorithm grid means, the budgets and machines."""
    present = {r["algo"] for r in records}
    algos = [a for a in RECORD_ALGOS if a in present] + sorted(present - set(RECORD_ALGOS))
    rows = []
    for env, dataset in _datasets(records):
        mine = [r for r in records if r["env"] == env and r["dataset"] == dataset]
        cells: dict[str, dict[str, Any]] = {}
        for algo in algos:
            runs = [r for r in mine if r["algo"] == algo]
            if runs:
                cells[algo] = {m: stats([r.get(m) for r in runs]) for m in METRICS} | {
                    "seeds": sorted(r["seed"] for r in runs)
                }
        best = {}
        for score in SCORES:
            means = {a: c[score]["mean"] for a, c in cells.items() if c[score] is not None}
            if means:
                best[score] = max(means, key=lambda a: means[a])
        rows.append({"env": env, "dataset": dataset, "cells": cells, "best": best})
    common = [row for row in rows if all(a in row["cells"] for a in algos)]
    per_algo: dict[str, dict[str, Any]] = {}
    for algo in algos:
        per_algo[algo] = {"cells": sum(algo in row["cells"] for row in rows)}
        for score in SCORES:
            per_algo[algo][score] = _grid_mean(rows, algo, score)
            per_algo[algo][f"{score}_common_cells"] = _grid_mean(common, algo, score)
            per_algo[algo][f"{score}_se"] = _grid_mean_se(rows, algo, score)
    return {
        "algos": algos,
        "rows": rows,
        "per_algo": per_algo,
        "common_cells": [f"{row['env']}/{row['dataset']}" for row in common],
        "budget": {a: sorted({r["steps"] for r in records if r["algo"] == a}) for a in algos},
        "schedules": sorted({json.dumps(r["schedule"]) for r in records if "schedule" in r}),
        "episodes": sorted({r["episodes"] for r in records}),
        "machines": sorted({r["machine"] for r in records}),
        "commands": sorted({command_template(r["command"]) for r in records if r.get("command")}),
        "quick": any(r.get("quick") for r in records),
        "runs": len(records),
        "action_noise": sorted(
            {r.get("action_noise", 1.0) for r in records if r["algo"] in ("bc", "qipo-ot")}
        ),
        "bootstrap": {
            score: {a: gap for a in algos if a != QIPO and (gap := bootstrap_gap(records, a, score=score))}
            for score in SCORES
        },
        "comparisons": [
            {"algo": algo, "base": base, "rows": rows}
            for algo, base, _ in PAIRS
            if (rows := paired_gains(records, algo, base))
        ],
    }


def _gains(pairs: list[tuple[Record, Record]], score: str) -> list[float] | None:
    """Per-seed `score` differences, or None where either run lacks that score (no reference returns)."""
    if any(a.get(score) is None or b.get(score) is None for a, b in pairs):
        return None
    return [a[score] - b[score] for a, b in pairs]


def paired_gains(records: list[Record], algo: str = "qipo-ot", base: str = "bc") -> list[dict[str, Any]]:
    """`algo` against `base` seed by seed, per env/dataset: both come from the same run (BC is QIPO's
    warm-up), so the paired difference is the honest test of "better than its own warm start"."""
    by_key = {(r["env"], r["dataset"], r["algo"], r["seed"]): r for r in records}
    out = []
    for env, dataset in _datasets(records):
        seeds = sorted(s for (e, d, a, s) in by_key if (e, d, a) == (env, dataset, algo))
        seeds = [s for s in seeds if (env, dataset, base, s) in by_key]
        if not seeds:
            continue
        pairs = [(by_key[env, dataset, algo, s], by_key[env, dataset, base, s]) for s in seeds]
        out.append(
            {
                "env": env,
                "dataset": dataset,
                "seeds": seeds,
                "gain_d4rl_style": _gains(pairs, "normalized_d4rl_style"),
                "gain_own": _gains(pairs, "normalized_own"),
                "final_returns": [[a["final_return"], b["final_return"]] for a, b in pairs],
                "above_final": sum(a["final_return"] > b["final_return"] for a, b in pairs),
                "above_last3": sum(a["last3_return"] > b["last3_return"] for a, b in pairs),
            }
        )
    return out


def bootstrap_gap(
    records: list[Record],
    algo: str,
    base: str = QIPO,
    resamples: int = 4000,
    seed: int = 0,
    score: str = "normalized_d4rl_style",
) -> dict[str, Any] | None:
    """How sure is "`algo`'s grid mean is above `base`'s"? Resample each cell's seeds with replacement
    (cells independent), on the final `score`, over the datasets where both have that score from two or
    more seeds (one seed says nothing about seed noise). None where no dataset qualifies."""
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        if r["algo"] in (algo, base) and r.get(score) is not None:
            cell = cells.setdefault((r["env"], r["dataset"]), {algo: [], base: []})
            cell[r["algo"]].append(r[score])
    shared = [c for c in cells.values() if len(c[algo]) >= 2 and len(c[base]) >= 2]
    if not shared:
        return None
    rng = np.random.default_rng(seed)
    gaps = np.zeros(resamples)
    for cell in shared:
        for name, sign in ((algo, 1.0), (base, -1.0)):
            x = np.asarray(cell[name])
            gaps += sign * x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    gaps /= len(shared)
    return {
        "base": base,
        "score": score,
        "cells": len(shared),
        "resamples": resamples,
        "gap": float(np.mean([np.mean(c[algo]) - np.mean(c[base]) for c in shared])),
        "p_above": float((gaps > 0).mean()),
        "gap_90": [float(np.quantile(gaps, 0.05)), float(np.quantile(gaps, 0.95))],
    }


def bootstrap_table(summary: dict[str, Any]) -> list[str]:
    """Both scores: D4RL-style covers the locomotion datasets, own covers the whole suite."""
    by_score = {k: v for k, v in (summary.get("bootstrap") or {}).items() if v}
    if not by_score:
        return []
    base = ALGO_LABELS[QIPO]
    resamples = next(iter(next(iter(by_score.values())).values()))["resamples"]
    lines = [
        f"## Grid mean against {base}'s, bootstrap over seeds",
        "",
        f"Each cell's seeds resampled with replacement ({resamples:,} times), final scores, over the "
        f"datasets where both have two or more seeds: how often the grid mean is above {base}'s, and the "
        "90% interval of the gap. D4RL-style covers the datasets with D4RL reference returns "
        "(locomotion); own covers every dataset of the suite.",
        "",
        f"| algorithm | score | datasets | gap to {base} | P(above {base}) | 90% interval of the gap |",
        "|---|---|---:|---:|---:|---|",
    ]
    for score, boot in by_score.items():
        for algo, b in boot.items():
            lo, hi = b["gap_90"]
            lines.append(
                f"| {ALGO_LABELS.get(algo, algo)} | {SCORES[score]} | {b['cells']} | {b['gap']:+.1f} | "
                f"{100 * b['p_above']:.0f}% | {lo:+.1f} to {hi:+.1f} |"
            )
    return [*lines, ""]


def _ret(x: float) -> str:
    """A return with the digits that matter: whole numbers for locomotion, two decimals for short tasks."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"


def paired_table(algo: str, base: str, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown of one `paired_gains` comparison."""
    a, b = ALGO_LABELS.get(algo, algo), ALGO_LABELS.get(base, base)
    note = next(text for x, y, text in PAIRS if (x, y) == (algo, base))
    lines = [
        f"## {a} against {b}, seed by seed",
        "",
        note,
        "",
        f"| env / dataset | final return, {a} vs {b}, per seed | gain, D4RL-style (mean) | gain, own (mean) "
        f"| seeds above: final | seeds above: last-3 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in rows:
        returns = " · ".join(f"{_ret(x)} vs {_ret(y)}" for x, y in p["final_returns"])
        gains = [
            "–" if p.get(key) is None else f"{np.mean(p[key]):+.1f}"
            for key in ("gain_d4rl_style", "gain_own")
        ]
        n = len(p["seeds"])
        lines.append(
            f"| {p['env']} / {p['dataset']} | {returns} | {gains[0]} | {gains[1]} "
            f"| {p['above_final']}/{n} | {p['above_last3']}/{n} |"
        )
    return [*lines, ""]


def command_template(command: str) -> str:
    """A run's command with its cell named by placeholders, so a grid's runs collapse to one line each
    way they were run (every record keeps its exact command)."""
    for flag, name in CELL_FLAGS.items():
        command = re.sub(rf"{flag} \S+", f"{flag} {name}", command)
    return command


def _grid_mean_se(rows: list[dict[str, Any]], algo: str, score: str) -> float | None:
    """Standard error of the grid mean over training seeds (cells independent): says whether a gap between
    two algorithms' grid means is larger than seed noise. None unless every cell has two or more seeds."""
    found = [(row["cells"].get(algo) or {}).get(score) for row in rows]
    cells: list[Stats] = [c for c in found if c is not None and c["n"] >= 2]
    if not cells or len(cells) < len(found):
        return None
    # a cell's mean has variance s²/n with s² the sample variance; the cells hold the population std σ,
    # and s²/n = σ²·n/(n−1)/n = σ²/(n−1)
    var = sum(c["std"] ** 2 / (c["n"] - 1) for c in cells)
    return float(np.sqrt(var) / len(cells))


def _grid_mean(rows: list[dict[str, Any]], algo: str, score: str) -> float | None:
    means = [row["cells"][algo][score]["mean"] for row in rows if (row["cells"].get(algo) or {}).get(score)]
    return float(np.mean(means)) if means else None


def _cell(cell: dict[str, Any] | None, score: str, bold: bool) -> str:
    s = (cell or {}).get(score)
    if s is None:
        return "–"
    text = f"{s['mean']:.1f} ± {s['std']:.1f}"
    return f"**{text}** ({s['n']})" if bold else f"{text} ({s['n']})"


def markdown(summary: dict[str, Any], command: str) -> str:
    lines = _preamble(summary)
    if summary["quick"]:
        lines += ["**Smoke-test budgets (`--quick`): these numbers say nothing about the methods.**", ""]
    for score, label in SCORES.items():
        lines += _score_table(summary, score, label)
    lines += bootstrap_table(summary)
    for comparison in summary.get("comparisons", []):
        lines += paired_table(comparison["algo"], comparison["base"], comparison["rows"])
    lines += [
        f"{summary['runs']} records. Machine: {'; '.join(summary['machines'])}.",
        "",
        "Runs (each record keeps its exact command): "
        + "; ".join(f"`{c}`" for c in summary["commands"])
        + f". Summary: `{command}`.",
        "",
    ]
    return "\n".join(lines)


def _preamble(summary: dict[str, Any]) -> list[str]:
    """What was compared, at which budget, with which settings."""
    algos = summary["algos"]
    budget = "; ".join(
        f"{ALGO_LABELS.get(a, a)} {', '.join(f'{s:,}' for s in summary['budget'][a])}" for a in algos
    )
    schedules = ", ".join(
        "K1 {k1:,} + K2 {k2:,} + K3 {k3:,}".format(**json.loads(s)) for s in summary["schedules"]
    )
    return [
        "# Offline RL: QIPO-OT vs its own BC vs d3rlpy's peers",
        "",
        "Same Minari datasets, same gradient-step budget, same evaluation for every algorithm: "
        f"{' / '.join(str(e) for e in summary['episodes'])} episodes per evaluation with fixed env seeds "
        "(10,000 + 100·seed + episode), the score of each run's final policy; cells are mean ± std over "
        "training seeds (n seeds in brackets), the best mean of a row in bold, – where no run exists yet.",
        "",
        f"Gradient steps per run: {budget}. QIPO schedule: {schedules or '–'}; BC is the QIPO run's "
        "behaviour warm-up (K1), evaluated before the critic and improvement phases start"
        + (
            "; best-of-N picks among N policy samples by the QIPO critic's Q, at QIPO-OT's checkpoints"
            if "qipo-ot-bon" in algos
            else ""
        )
        + (
            "; BC and QIPO-OT act with one policy sample per state from source noise scaled by "
            + " / ".join(f"{x:g}" for x in summary["action_noise"])
            + " (`action_noise`), the full-noise columns with the same policies at 1"
            if set(FULL_NOISE.values()) & set(algos)
            else ""
        )
        + ". IQL: expectile 0.7, weight_temp 3.0, rewards × 1000/return spread, cosine actor schedule; "
        "TD3+BC: alpha 2.5; ReBRAC: its reproduction settings with the paper's per-dataset BC coefficients "
        "(a tuned peer, the harder bar); MSE BC: a deterministic policy regressed onto the data; all with "
        "standardised observations (d3rlpy 2.8.1). "
        "Last-3 scores and learning curves are in the JSON beside this file; the last three evaluations "
        "fall at different steps per algorithm (QIPO's inside K3, the peers' spread over training), so "
        "compare algorithms on final scores and use last-3 only within a run.",
        "",
    ]


def _score_table(summary: dict[str, Any], score: str, label: str) -> list[str]:
    """One normalised score: a row per dataset, the grid mean, its standard error, the common-cells mean."""
    algos = summary["algos"]
    lines = [
        f"## Normalised score, {label}",
        "",
        (
            "D4RL v2 reference returns on gymnasium v5 envs: comparable to D4RL papers in spirit only."
            if score == "normalized_d4rl_style"
            else "0 = our random policy, 100 = our dataset generator's expert policy."
        ),
        "",
        "| env / dataset | " + " | ".join(ALGO_LABELS.get(a, a) for a in algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    for row in summary["rows"]:
        cells = [_cell(row["cells"].get(a), score, row["best"].get(score) == a) for a in algos]
        lines.append(f"| {row['env']} / {row['dataset']} | " + " | ".join(cells) + " |")
    grid = [summary["per_algo"][a][score] for a in algos]
    top = max((g for g in grid if g is not None), default=None)
    lines.append(
        "| **mean over the grid** | "
        + " | ".join("–" if g is None else (f"**{g:.1f}**" if g == top else f"{g:.1f}") for g in grid)
        + " |"
    )
    errors = [summary["per_algo"][a].get(f"{score}_se") for a in algos]
    if any(e is not None for e in errors):
        lines.append(
            "| standard error of that mean, over seeds | "
            + " | ".join("–" if e is None else f"± {e:.1f}" for e in errors)
            + " |"
        )
    common = [summary["per_algo"][a][f"{score}_common_cells"] for a in algos]
    if summary["common_cells"] and len(summary["common_cells"]) < len(summary["rows"]):
        lines.append(
            f"| mean over the {len(summary['common_cells'])} cells every algorithm has | "
            + " | ".join("–" if g is None else f"{g:.1f}" for g in common)
            + " |"
        )
    lines.append("")
    return lines


def plot(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars per env/dataset, one per algorithm, error bars = std over seeds; one panel per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos, rows = summary["algos"], summary["rows"]
    x = np.arange(len(rows))
    width = 0.8 / max(1, len(algos))
    fig, axes = plt.subplots(
        len(SCORES), 1, figsize=(max(7.0, 1.6 * len(rows) + 2), 3.8 * len(SCORES)), squeeze=False
    )
    for ax, (score, label) in zip(axes[:, 0], SCORES.items(), strict=True):
        for i, algo in enumerate(algos):
            cells = [(row["cells"].get(algo) or {}).get(score) for row in rows]
            means = [np.nan if c is None else c["mean"] for c in cells]
            stds = [0.0 if c is None else c["std"] for c in cells]
            offset = (i - (len(algos) - 1) / 2) * width
            ax.bar(
                x + offset,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=ALGO_LABELS.get(algo, algo),
                color=f"C{i}",
            )
        ax.set_xticks(x, [f"{row['env']}\n{row['dataset']}" for row in rows])
        ax.set_ylabel(f"normalised score ({label})")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(algos), 3), fontsize="small")
    fig.suptitle("Final policy, mean ± std over seeds", fontsize="medium")
    legend_height = 0.035 * -(-len(algos) // 3) * 2 / len(SCORES)  # figure fraction per legend row
    fig.tight_layout(rect=(0, legend_height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(records: list[Record], out: Path, command: str, stem: str = "rl") -> dict[str, Path]:
    """out/rl.json (records + summary), out/rl.md, out/rl.png."""
    if not records:
        raise ValueError("no run records to summarise; run `scripts/bench_grid.py run` first")
    summary = summarise(records)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{stem}.{k}" for k in ("json", "md", "png")}
    paths["json"].write_text(
        json.dumps({"summary": summary, "command": command, "records": records}, indent=1) + "\n"
    )
    paths["md"].write_text(markdown(summary, command))
    plot(summary, paths["png"])
    return paths
