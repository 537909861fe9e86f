"""`qipo toy …`: registered through the `qipo.commands` entry-point group as the `toy` sub-app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

toy_app = typer.Typer(help="2-D toys with a known exact answer: is EFM exact?", no_args_is_help=True)
console = Console()


@toy_app.callback()
def toy() -> None:
    """2-D toys with a known exact answer (keeps `toy` a group even with one subcommand)."""


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise ValueError(f"--betas takes comma-separated numbers such as 1,3,10, got {text!r}") from None


@toy_app.command("bench")
def bench(
    out: Annotated[Path, typer.Option(help="Directory for toy.json, toy.md, toy.png, toy.meta.json")],
    quick: Annotated[
        bool, typer.Option(help="CI size: 400 steps, 2k samples (~10 s per dataset and β)")
    ] = False,
    datasets: Annotated[str | None, typer.Option(help="Comma-separated subset (default: all six)")] = None,
    betas: Annotated[str, typer.Option(help="Comma-separated β values")] = "1,3,10",
    size: Annotated[
        str,
        typer.Option(help="Network and budget: small (hidden 128, 2k steps) or large (256, 2 blocks, 8k)"),
    ] = "small",
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps per model (override)")] = None,
    hidden: Annotated[int | None, typer.Option(min=8, help="VelocityNet width (override)")] = None,
    blocks: Annotated[int | None, typer.Option(min=0, help="Residual blocks (override)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Batch (the softmax population)")] = None,
    ot_steps: Annotated[int | None, typer.Option(min=1, help="Euler steps of EFM/CFG sampling")] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of efm,ed,cfm,cfg (efm required; default all)")
    ] = None,
    device: Annotated[str, typer.Option(help="torch device for training and sampling: cpu, cuda")] = "cpu",
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (the box is shared: keep 1)")] = 1,
) -> None:
    """Train EFM, energy-weighted diffusion, unguided CFM and CFG-style models on the six QGPO toys and
    measure each against exact samples of q ∝ p·exp(−βE). A stopped run resumes at its next model when
    the same command is run again (finished models wait in OUT/partial)."""
    import torch

    from training.toy.bench import bench_config, run_bench, write_outputs

    torch.set_num_threads(threads)
    given = {
        "steps": steps,
        "hidden": hidden,
        "blocks": blocks,
        "batch_size": batch_size,
        "ot_steps": ot_steps,
    }
    try:
        overrides: dict[str, Any] = {"betas": _floats(betas), "seed": seed}
        if datasets:
            overrides["datasets"] = tuple(d.strip() for d in datasets.split(",") if d.strip())
        if methods:
            overrides["methods"] = tuple(m.strip() for m in methods.split(",") if m.strip())
        train: dict[str, Any] = {k: v for k, v in given.items() if v is not None} | {"device": device}
        config = bench_config(size, quick, train, **overrides)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    # OUT/partial keeps each finished model until the run ends: rerunning the same command resumes there
    result = run_bench(config, on_dataset=lambda part: write_outputs(part, out), checkpoints=out / "partial")
    paths = write_outputs(result, out)
    _print_claims(result.records)
    console.print(
        f"wrote {', '.join(str(p) for p in paths.values())} ({result.meta['cpu_seconds']:.0f} s CPU)"
    )


def _print_claims(records: list[dict[str, Any]]) -> None:
    from training.toy.bench import checks

    summary = checks(records)
    for claim in ("efm_within_2x_floor", "efm_within_2x_exact", "efm_beats_p", "efm_beats_cfg_at_max_beta"):
        ok, bad = summary[f"{claim}:pass"], summary[f"{claim}:fail"]
        if not ok and not bad:  # e.g. `--methods efm`: no unguided or CFG model to compare with
            continue
        console.print(
            f"{claim}: {len(ok)}/{len(ok) + len(bad)}" + (f" (not: {', '.join(bad)})" if bad else "")
        )


@toy_app.command("merge")
def merge(
    shards: Annotated[
        list[Path], typer.Argument(help="Directories written by `qipo toy bench --datasets …`")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the merged toy.json, toy.md, toy.png")],
) -> None:
    """Join runs of dataset subsets (one per core or machine) into one table, as if run in one go."""
    from training.toy.bench import merge_shards, write_outputs

    try:
        if any(out.resolve() == s.resolve() for s in shards):
            raise ValueError(f"--out {out} is one of the shards: write the merge elsewhere")
        result = merge_shards(shards)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    write_outputs(result, out, samples=False)
    console.print(f"merged {len(shards)} shard(s) into {out}")
    _print_claims(result.records)


@toy_app.command("exact")
def exact(
    runs: Annotated[list[Path], typer.Argument(help="Directories written by `qipo toy bench`")],
    draws: Annotated[int, typer.Option(min=1, help="Fresh exact samples per reference")] = 16,
) -> None:
    """Add the exact-draw baseline to finished runs without retraining: replay each reference from its
    seeds and score fresh exact samples against it (records, meta and toy.md are rewritten; the figure
    and the models' distances stay)."""
    from training.toy.bench import add_exact_baseline, write_tables

    for run in runs:
        try:
            records = json.loads((run / "toy.json").read_text())
            meta = json.loads((run / "toy.meta.json").read_text())
            records = add_exact_baseline(records, meta, draws)
        except (OSError, ValueError) as exc:
            typer.echo(f"error: {run}: {exc}", err=True)
            raise typer.Exit(1) from exc
        meta["config"]["exact_draws"] = draws
        write_tables(records, meta, run)
        console.print(f"{run}: exact-draw baseline from {draws} draws per reference")
        _print_claims(records)
