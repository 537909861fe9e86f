"""Training subcommands of `qipo` (registered through the `qipo.commands` entry-point group)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

console = Console()
data_app = typer.Typer(help="Make and inspect offline datasets.", no_args_is_help=True)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


@data_app.command("make")
def data_make(
    env: Annotated[str, typer.Argument(help="pendulum | hopper | halfcheetah")] = "pendulum",
    out: Annotated[Path, typer.Option(help="Root directory of the Minari datasets")] = Path("data"),
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated. pendulum: expert,medium,random,mixed; "
            "hopper/halfcheetah: random,medium,medium-replay,medium-expert (default: all)"
        ),
    ] = None,
    episodes: Annotated[
        int, typer.Option(min=1, help="pendulum: episodes per dataset (200 steps each)")
    ] = 100,
    sac_steps: Annotated[int, typer.Option(min=1, help="MuJoCo: SAC steps of the medium policy")] = 100_000,
    expert_steps: Annotated[
        int | None, typer.Option(help="MuJoCo: further SAC steps for the expert (default: --sac-steps)")
    ] = None,
    transitions: Annotated[int, typer.Option(min=1, help="MuJoCo: transitions per dataset")] = 200_000,
    threads: Annotated[int | None, typer.Option(help="torch threads (SAC)")] = None,
    train_sac: Annotated[
        bool,
        typer.Option(
            "--train-sac",
            help="MuJoCo: train the SAC behaviour policies anew (≈ 1 h per env on one core) instead of "
            "rolling out the committed ones (training/data/policies)",
        ),
    ] = False,
    seed: int = 0,
) -> None:
    """Generate datasets locally as Minari datasets (`<out>/<env>/<kind>-v0`)."""
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None
    try:
        if env == "pendulum":
            from training.data.pendulum import KINDS, make_pendulum_datasets

            paths = make_pendulum_datasets(out.resolve(), wanted or KINDS, episodes, seed)
        elif env in ("hopper", "halfcheetah"):
            from training.data.mujoco import KINDS as MUJOCO_KINDS
            from training.data.mujoco import make_mujoco_datasets

            set_threads(threads)
            paths = make_mujoco_datasets(
                env,
                out.resolve(),
                wanted or MUJOCO_KINDS,
                sac_steps=sac_steps,
                expert_steps=expert_steps,
                transitions=transitions,
                seed=seed,
                train=train_sac,
            )
        else:
            raise fail(f"unknown env {env!r}: choose pendulum, hopper or halfcheetah")
    except (ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    for kind, path in paths.items():
        console.print(f"{kind:>13}: {path}")


@data_app.command("inspect")
def data_inspect(path: Path) -> None:
    """Validate a dataset (Minari dir, .hdf5, .npz) and print its summary."""
    from training.data import DatasetError, load_dataset

    try:
        ds = load_dataset(path)
    except DatasetError as exc:
        raise fail(str(exc)) from exc
    typer.echo(json.dumps(ds.describe(), indent=2))


def train_command(
    dataset: Annotated[Path, typer.Argument(help="Minari dataset dir, .hdf5 or .npz")],
    out: Annotated[Path, typer.Option(help="Run directory (checkpoint, metrics.jsonl, eval.json)")],
    config: Annotated[Path | None, typer.Option(help="JSON file with QIPOConfig fields")] = None,
    algo: Annotated[str | None, typer.Option(help="qipo | bc")] = None,
    variant: Annotated[str | None, typer.Option(help="qipo-ot | qipo-diff")] = None,
    behavior_steps: Annotated[int | None, typer.Option(help="K1")] = None,
    critic_steps: Annotated[int | None, typer.Option(help="K2")] = None,
    improve_steps: Annotated[int | None, typer.Option(help="K3")] = None,
    beta: float | None = None,
    support_size: Annotated[int | None, typer.Option(help="M")] = None,
    renew_every: Annotated[int | None, typer.Option(help="K_renew")] = None,
    batch_size: int | None = None,
    critic_kind: Annotated[str | None, typer.Option(help="softmax-q | iql")] = None,
    improve_loss: Annotated[str | None, typer.Option(help="full | resample")] = None,
    solver: Annotated[
        str | None, typer.Option(help="euler | midpoint (OT); dpm-solver-2 | ddim (diff)")
    ] = None,
    solver_steps: int | None = None,
    action_selection: Annotated[str | None, typer.Option(help="sample | best-of-n")] = None,
    best_of_n: Annotated[int | None, typer.Option(help="N candidates for best-of-n")] = None,
    seed: int | None = None,
    behavior_from: Annotated[Path | None, typer.Option(help="Reuse this run's behaviour policy")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its checkpoint")] = False,
    eval_episodes: Annotated[int, typer.Option(help="Episodes evaluated at the end (0: skip)")] = 10,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every N steps")] = 2000,
) -> None:
    """Train a QIPO (or BC) flow policy offline."""
    from training.config import QIPOConfig
    from training.data import DatasetError, load_dataset
    from training.qipo import QIPOTrainer, load_checkpoint

    set_threads(threads)
    overrides: dict[str, Any] = {
        k: v
        for k, v in dict(
            algo=algo,
            variant=variant,
            behavior_steps=behavior_steps,
            critic_steps=critic_steps,
            improve_steps=improve_steps,
            beta=beta,
            support_size=support_size,
            renew_every=renew_every,
            batch_size=batch_size,
            critic_kind=critic_kind,
            improve_loss=improve_loss,
            solver=solver,
            solver_steps=solver_steps,
            action_selection=action_selection,
            best_of_n=best_of_n,
            seed=seed,
        ).items()
        if v is not None
    }
    try:
        base = json.loads(config.read_text()) if config else {}
        cfg = QIPOConfig.model_validate(base | overrides)
    except (OSError, ValueError) as exc:
        raise fail(f"bad config: {exc}") from exc
    try:
        ds = load_dataset(dataset)
    except DatasetError as exc:
        raise fail(str(exc)) from exc
    trainer = QIPOTrainer(ds, cfg)
    if resume:
        try:
            trainer.load_state_dict(load_checkpoint(out))
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    elif behavior_from is not None:
        try:
            trainer.load_behavior(behavior_from)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text(json.dumps(ds.describe() | {"path": str(dataset)}, indent=2))
    from training.metrics import MetricsWriter, plot_learning_curves

    def on_step(step: int) -> None:
        if step % checkpoint_every == 0:
            trainer.save(out)

    with MetricsWriter(out, resume=resume) as on_log:
        trainer.fit(on_log=on_log, on_step=on_step)
    trainer.save(out)
    plot_learning_curves(out)
    summary = trainer.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for line in describe_summary(summary):
        console.print(line)
    if eval_episodes > 0 and ds.env_id:
        from training.eval import evaluate

        policy = trainer.policy()
        refs = ds.ref_scores
        own = (refs["ref_min_score"], refs["ref_max_score"]) if len(refs) == 2 else None
        result = evaluate(
            policy.act_numpy,
            ds.env_id,
            eval_episodes,
            seed=cfg.seed + 10_000,
            noise_dim=policy.noise_dim,
            own_refs=own,
        )
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        console.print(
            f"[bold]{cfg.algo}[/] {ds.name}: return {result['mean_return']:.1f} ± {result['std_return']:.1f}"
        )
    console.print(f"run saved in {out}")


def describe_summary(summary: dict[str, Any]) -> list[str]:
    """The run summary in the lines a user reads before any rollout."""
    lines = []
    critic = summary.get("critic")
    if critic and critic.get("q_mc_corr") is not None:
        lines.append(
            f"critic vs held-out returns: corr {critic['q_mc_corr']:.3f}, bias {critic['q_mc_bias']:+.2f} "
            f"({critic['q_mc_rows']} steps; reward scale {summary['reward_scale']:.4g})"
        )
    for r in summary.get("renewals", []):
        lines.append(
            f"renewal {r['renewal']} at step {r['step']}: β_eff {r['beta_eff']:.4g}, ESS/(M+1) "
            f"{r['ess_fraction']:.3f}, dataset-action weight {r['data_weight']:.3f}"
        )
    return lines


def _act_fn_for(path: Path) -> tuple[Any, str]:
    """A run directory (torch checkpoint) or an artifact directory (ONNX) → (act_fn, label)."""
    act, label, _ = _policy_for(path)
    return act, label


def _policy_for(path: Path) -> tuple[Any, str, int]:
    """Like `_act_fn_for`, plus the width of the policy's noise input (N·A for best-of-N)."""
    if (path / "manifest.json").exists():
        import onnxruntime as ort

        session = ort.InferenceSession(str(path / "policy.onnx"), providers=["CPUExecutionProvider"])
        noise_dim = int(next(i for i in session.get_inputs() if i.name == "noise").shape[1])

        def act(state: np.ndarray, noise: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(["action"], {"state": state, "noise": noise})[0])

        return act, f"{path.name} (onnx)", noise_dim
    from training.qipo import policy_from_checkpoint

    policy, cfg, _ = policy_from_checkpoint(path)
    return policy.act_numpy, f"{path.name} ({cfg.algo})", policy.noise_dim


def _evaluate_server(url: str, env: str, episodes: int, seed: int) -> tuple[dict[str, Any], str]:
    """Closed loop through the server: one request per robot and step with seed=step_seed(...), so the
    returns equal an in-process evaluation of the same artifact."""
    from service.client import NoAction, SeededActor, ServerError
    from training.eval import evaluate

    actor = SeededActor(url)
    try:
        return evaluate(None, env, episodes, seed, seeded_act=actor), f"{url} (server)"
    except (NoAction, ServerError) as exc:
        raise fail(f"server {url}: {exc}") from exc
    finally:
        actor.close()


def eval_command(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run directories or exported artifact directories")
    ] = None,
    env: Annotated[str, typer.Option(help="gymnasium env id")] = "Pendulum-v1",
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    seed: int = 10_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results here")] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Also evaluate the policy served at this URL (POST /act)")
    ] = None,
) -> None:
    """Evaluate policies in gymnasium with fixed seeds and print them side by side."""
    from training.eval import evaluate

    if not runs and not server:
        raise fail("nothing to evaluate: give run/artifact directories and/or --server URL")
    table = Table("policy", "mean return", "std", "normalised (own refs)", "episodes")
    results = {}
    targets: list[Path | str] = [*(runs or []), *([server] if server else [])]
    for path in targets:
        if isinstance(path, str):
            res, label = _evaluate_server(path, env, episodes, seed)
        else:
            try:
                act, label, noise_dim = _policy_for(path)
            except (FileNotFoundError, ValueError) as exc:
                raise fail(str(exc)) from exc
            res = evaluate(act, env, episodes, seed, noise_dim=noise_dim)
        results[str(path)] = res
        score = res["normalized_score"]
        table.add_row(
            label,
            f"{res['mean_return']:.1f}",
            f"{res['std_return']:.1f}",
            "" if score is None else f"{score:.1f}",
            str(episodes),
        )
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(results, indent=2))


def export_command(
    run: Annotated[Path, typer.Argument(help="Run directory written by `qipo train`")],
    out: Annotated[Path, typer.Option(help="Artifact directory to write")],
    name: Annotated[str, typer.Option(help="Model name in the registry")] = "pendulum-qipo",
    scores: Annotated[Path | None, typer.Option(help="`qipo eval --json` output to record")] = None,
) -> None:
    """Export the K-step sampler to ONNX with a manifest (parity-checked against torch)."""
    from training.export import ExportError, export_artifact
    from training.qipo import policy_from_checkpoint

    try:
        policy, cfg, _ = policy_from_checkpoint(run)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    dataset = json.loads((run / "dataset.json").read_text()) if (run / "dataset.json").exists() else {}
    recorded: dict[str, Any] = {}
    if scores is not None:  # `qipo eval --json` keys results by path: keep this run's entry
        by_path = json.loads(scores.read_text())
        recorded = next((v for k, v in by_path.items() if Path(k).resolve() == run.resolve()), {})
    elif (run / "eval.json").exists():
        recorded = json.loads((run / "eval.json").read_text())
    variant = "bc" if cfg.algo == "bc" else cfg.variant
    try:
        manifest = export_artifact(
            policy,
            out,
            name=name,
            variant=variant,
            training_config=cfg.model_dump(mode="json"),
            dataset=dataset,
            scores=recorded,
        )
    except ExportError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"exported {manifest.name} to {out} (parity {manifest.export_parity_max_abs_err:.1e}, "
        f"sha256 {manifest.files['policy.onnx'].sha256[:12]}…)"
    )


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    sys.exit(0)
