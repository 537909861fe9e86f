"""One toy cell, EFM alone, at the bench's own seeds and reference: what a budget or solver change buys.

The bench trains every method at every β; this trains one EFM net for one (dataset, β), so a budget can be
chosen in minutes before the whole bench is rerun at it. With `--seed-offset 0` the net, its samples and
the reference are exactly the bench's (2spirals β = 10 at the 4k-step size gives the bench's 0.0234).
Each row (one per `--sample-steps` value) is appended to `--out` as JSON. On 8gaussians a row also carries
the mass of each mode (nearest centre) in the model's sample, in the reference and under q itself (the
training sample reweighted by exp(−βE)), since there SWD mostly measures mass put in the wrong mode.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/toy_probe.py --steps 8000 --label steps8k
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.toy.bench import bench_config, beta_seed, dataset_stream, draw_reference, measure
from training.toy.datasets import EIGHT_GAUSSIAN_CENTERS
from training.toy.models import make_path, sample_toy_model, train_toy_model


def mode_masses(x: np.ndarray, weights: np.ndarray | None = None) -> list[float]:
    """The share of `x` (weighted, if given) nearest each 8gaussians mode."""
    nearest = np.argmin(((x[:, None, :] - EIGHT_GAUSSIAN_CENTERS[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(nearest, weights=weights, minlength=len(EIGHT_GAUSSIAN_CENTERS))
    return [round(float(c), 4) for c in counts / counts.sum()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="2spirals")
    ap.add_argument("--beta", type=float, default=10.0, help="one of the bench's betas (1, 3, 10)")
    ap.add_argument("--size", default="large", help="named size the overrides apply to")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed-offset", type=int, default=0, help="0: the bench's seed; k: another net")
    ap.add_argument("--sample-steps", default="100", help="comma-separated Euler step counts")
    ap.add_argument("--exact-draws", type=int, default=4, help="fresh exact samples for the yardstick")
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", type=Path, default=Path("build/toy_probe.jsonl"))
    return ap.parse_args(argv)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given on the command line (the size's own values stand for the rest)."""
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}
    return {k: v for k, v in given.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)

    config = bench_config(args.size, train=train_overrides(args), datasets=(args.dataset,))
    rng, data, energy = dataset_stream(config, args.dataset)
    bi = config.betas.index(args.beta)
    for b in range(bi + 1):  # earlier betas' references come first in the stream; draw them cheaply
        draws = args.exact_draws if b == bi else 1
        reference = draw_reference(replace(config, exact_draws=draws), args.dataset, b, rng)
    seed = beta_seed(config, args.dataset, bi) + 1000 * args.seed_offset  # offset 0: the bench's EFM net
    t0 = time.process_time()
    model = train_toy_model(data, energy, make_path("ot"), args.beta, config.train, seed, "efm")
    cpu = time.process_time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # What the model's mode masses are compared with: the same for every row.
    known_masses: dict[str, list[float]] = {}
    if args.dataset == "8gaussians":
        tilt = np.exp(-args.beta * (energy - energy.min()))
        known_masses = {"reference": mode_masses(reference[0]), "q": mode_masses(data, tilt)}
    for k in (int(s) for s in args.sample_steps.split(",")):
        x = sample_toy_model(model, config.n_eval, k, seed + 2)
        record = measure(config, args.dataset, bi, "efm", x, reference)
        row = {
            "label": args.label,
            "dataset": args.dataset,
            "beta": args.beta,
            "seed": seed,
            "train": config.train.as_dict(),
            "sample_steps": k,
            "train_cpu_s": round(cpu),
            **{key: record[key] for key in ("swd", "mmd", "swd_exact", "swd_floor")},
            "exact_draws": args.exact_draws,
        }
        if known_masses:
            row["mode_masses"] = {"model": mode_masses(x)} | known_masses
        print(json.dumps(row), flush=True)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
