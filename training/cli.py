"""Training subcommands of `qipo` (registered through the `qipo.commands` entry-point group)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from qipo_client.policy import Policy
from rich.console import Console
from rich.table import Table

from service.artifact import MANIFEST_NAME

if TYPE_CHECKING:
    from training.data import TransitionDataset
    from training.distributed import Cluster

console = Console(soft_wrap=True)  # a message stays one line in a log, whatever the width
data_app = typer.Typer(help="Make and inspect offline datasets.", no_args_is_help=True)
RUN_DATASET_FILE = "dataset.json"  # the run's record of its data and env (read by eval and export)

DatasetArg = Annotated[
    str, typer.Argument(help="Minari dataset dir or id (local cache), D4RL-style .hdf5/.h5, or .npz")
]
EnvOpt = Annotated[
    str | None, typer.Option("--env", help="gymnasium env id; overrides the one the dataset records")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (also off when not a TTY)")]


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def show_progress(quiet: bool) -> bool:
    """Bars only for a person watching: a redirected log gets no carriage-return spam."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show warnings raised inside as `warning: …` lines on stderr, without Python's file:line noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for item in caught:
                if issubclass(item.category, UserWarning):
                    typer.echo(f"warning: {item.message}", err=True)


def load_data(dataset: str, env: str | None) -> TransitionDataset:
    """`load_dataset` with its refusals as one `error:` line and its warnings as `warning:` lines."""
    from training.data import DatasetError, load_dataset

    with warnings_as_lines():
        try:
            return load_dataset(dataset, env_id=env)
        except DatasetError as exc:
            raise fail(str(exc)) from exc


@data_app.command("make")
def data_make(
    env: Annotated[
        str, typer.Argument(help="pendulum | reacher | hopper | halfcheetah | walker2d")
    ] = "pendulum",
    out: Annotated[Path, typer.Option(help="Root directory of the Minari datasets")] = Path("data"),
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated. pendulum: expert,medium,random,mixed; reacher: expert,noisy,random,mixed; "
            "hopper/halfcheetah/walker2d: random,medium,medium-replay,medium-expert (default: all)"
        ),
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="pendulum / reacher: episodes per dataset (200 / 50 steps each; default 100 / 1000)",
        ),
    ] = None,
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
    quiet: QuietOpt = False,
) -> None:
    """Generate datasets locally as Minari datasets (`<out>/<env>/<kind>-v0`)."""
    from training.data.suite import check_kinds, family

    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None
    progress = show_progress(quiet)
    try:
        fam = family(env)
        check_kinds(env, wanted or ())
        if fam.generator == "pendulum":
            from training.data.pendulum import make_pendulum_datasets

            paths = make_pendulum_datasets(
                out.resolve(), wanted or fam.kinds, episodes or 100, seed, progress=progress
            )
        elif fam.generator == "reacher":
            from training.data.reacher import DEFAULT_EPISODES, make_reacher_datasets

            paths = make_reacher_datasets(
                out.resolve(), wanted or fam.kinds, episodes or DEFAULT_EPISODES, seed, progress=progress
            )
        else:
            from training.data.mujoco import make_mujoco_datasets

            set_threads(threads)
            paths = make_mujoco_datasets(
                env,
                out.resolve(),
                wanted or fam.kinds,
                sac_steps=sac_steps,
                expert_steps=expert_steps,
                transitions=transitions,
                seed=seed,
                train=train_sac,
                progress=progress,
            )
    except (ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    for kind, path in paths.items():
        console.print(f"{kind:>13}: {path}")


@data_app.command("inspect")
def data_inspect(dataset: DatasetArg, env: EnvOpt = None) -> None:
    """Validate a dataset and print its summary: sizes, returns, env id and action bounds, and where the
    env id and the bounds came from."""
    typer.echo(json.dumps(load_data(dataset, env).describe(), indent=2))


def apply_sets(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """`key=value` (dotted keys reach nested fields, e.g. network.hidden=256) onto a config dict. Values
    are JSON when they parse (3, 0.99, true, null, "auto"), else plain strings (auto, qipo-diff)."""
    out = json.loads(json.dumps(config))
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set {item!r}: use key=value, e.g. --set gamma=0.995 or --set network.hidden=256")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise fail(f"--set {item!r}: {'.'.join(parents[: i + 1])} is not a nested config")
            node = child
        node[leaf] = value
    return out


def config_error(exc: Exception) -> str:
    """A pydantic ValidationError as one line: `field.path: reason` per error (unknown fields list the
    known ones)."""
    from pydantic import BaseModel, ValidationError

    from training.config import QIPOConfig

    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0]
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        text = f"{loc or 'config'}: {err['msg']}"
        if err["type"] == "extra_forbidden":
            model: type[BaseModel] = QIPOConfig
            for part in err["loc"][:-1]:
                field = model.model_fields.get(str(part))
                annotation = field.annotation if field else None
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    model = annotation
            text += f" (known: {', '.join(model.model_fields)})"
        parts.append(text)
    return "; ".join(parts)


def check_env(env_id: str, obs_dim: int, act_dim: int, what: str) -> None:
    from training.data.envs import EnvError, check_fits

    try:
        check_fits(env_id, obs_dim, act_dim, what)
    except EnvError as exc:
        raise fail(str(exc)) from exc


def train_command(
    dataset: DatasetArg,
    out: Annotated[Path, typer.Option(help="Run directory (checkpoint, metrics.jsonl, eval.json)")],
    env: EnvOpt = None,
    config: Annotated[Path | None, typer.Option(help="JSON file with QIPOConfig fields")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key=value for any QIPOConfig field, repeatable; dotted for nested "
            "(--set gamma=0.995 --set network.hidden=256 --set reward_scale=auto)",
        ),
    ] = None,
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
    device: Annotated[str, typer.Option(help="auto (CUDA when torch sees it) | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every N steps")] = 2000,
    until: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this global step and save; continue later with --resume"),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a QIPO (or BC) flow policy offline. Under `torchrun` (RANK/WORLD_SIZE set) every process
    trains on its slice of each global batch and rank 0 writes the run (docs/training.md, "Training at
    scale")."""
    args = dict(locals())  # the parameters, by name: the QIPOConfig ones become `options`
    from training import distributed

    try:
        cluster = distributed.env_cluster()
    except distributed.DistributedError as exc:
        raise fail(str(exc)) from exc
    options = {name: args.pop(name) for name in CONFIG_OPTIONS}
    try:
        _train(**args, cluster=cluster, options=options)
    finally:
        distributed.shutdown()


# train_command's options that are QIPOConfig fields (None: not given, the config file or default holds).
CONFIG_OPTIONS = (
    "algo",
    "variant",
    "behavior_steps",
    "critic_steps",
    "improve_steps",
    "beta",
    "support_size",
    "renew_every",
    "batch_size",
    "critic_kind",
    "improve_loss",
    "solver",
    "solver_steps",
    "action_selection",
    "best_of_n",
    "seed",
)


def _train(
    dataset: str,
    out: Path,
    env: str | None,
    config: Path | None,
    set_: list[str] | None,
    device: str,
    threads: int | None,
    behavior_from: Path | None,
    resume: bool,
    eval_episodes: int,
    checkpoint_every: int,
    until: int | None,
    quiet: bool,
    cluster: Cluster,
    options: dict[str, Any],
) -> None:
    """`qipo train` on this process: every rank builds the trainer and steps; rank 0 alone writes."""
    from training.device import on_device

    main = cluster.is_main
    quiet = quiet or not main
    set_threads(threads)
    cfg = _config(config, set_, options)
    dev = _start(cluster, cfg, device)
    ds = load_data(dataset, env)
    if eval_episodes > 0 and main:
        if ds.env_id:
            check_env(ds.env_id, ds.obs_dim, ds.act_dim, f"dataset {ds.name}")
        else:
            typer.echo(
                f"note: {dataset} names no env, so the run will not be evaluated at the end; pass --env "
                "ENV_ID to evaluate it (and to record the env in the exported model)",
                err=True,
            )
    with on_device(dev):
        trainer = _trainer(ds, cfg, dev, out, cluster, quiet, resume, behavior_from)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        record = ds.describe() | {"path": str(dataset), "device": dev.type, "world_size": cluster.world_size}
        (out / RUN_DATASET_FILE).write_text(json.dumps(record, indent=2))
    _fit(
        trainer, ds, cfg, dev, out, main, resume, until, checkpoint_every, eval_episodes, show_progress(quiet)
    )


def _config(config: Path | None, set_: list[str] | None, options: dict[str, Any]) -> Any:
    """The run's QIPOConfig: the --config file, then the named options, then every --set."""
    from pydantic import ValidationError

    from training.config import QIPOConfig

    overrides: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    try:
        base = json.loads(config.read_text()) if config else {}
    except (OSError, ValueError) as exc:
        raise fail(f"bad config {config}: {exc}") from exc
    try:
        return QIPOConfig.model_validate(apply_sets(base | overrides, set_ or []))
    except (ValidationError, ValueError) as exc:
        raise fail(f"bad config: {config_error(exc)}") from exc


def _start(cluster: Cluster, cfg: Any, device: str) -> Any:
    """The torch device of this process, after the batches are checked against the ranks and (under
    torchrun) the process group is up."""
    from training import distributed
    from training.device import DeviceError, resolve_device

    try:
        dev = resolve_device(device)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    batches = {"batch_size": cfg.batch_size}
    if cfg.algo == "qipo" and cfg.improve_loss == "full" and cfg.improve_steps > 0:
        batches["improve_batch_size"] = cfg.improve_batch_size
    try:
        distributed.check_batches(cluster, **batches)
        return distributed.init(cluster, dev)
    except distributed.DistributedError as exc:
        raise fail(str(exc)) from exc


def _trainer(
    ds: TransitionDataset,
    cfg: Any,
    dev: Any,
    out: Path,
    cluster: Cluster,
    quiet: bool,
    resume: bool,
    behavior_from: Path | None,
) -> Any:
    """The trainer on `dev`, resumed from --out's checkpoint or given another run's behaviour policy."""
    from training.checkpoint import load_checkpoint
    from training.device import seat_generator, state_to
    from training.qipo import QIPOTrainer

    trainer = QIPOTrainer(ds, cfg, progress=show_progress(quiet))
    if not quiet:
        procs = f" × {cluster.world_size} processes" if cluster.enabled else ""
        console.print(
            f"{cfg.algo} on {ds.name} ({ds.size} transitions, env {ds.env_id or 'unknown'}): "
            f"{trainer.total_steps} steps on {dev.type}{procs} → {out}"
        )
    seat_generator(trainer, dev)
    try:
        if resume:
            trainer.load_state_dict(state_to(load_checkpoint(out), dev))
        elif behavior_from is not None:
            trainer.load_behavior(behavior_from)
    except FileNotFoundError as exc:
        where = "" if cluster.is_main else " (every rank reads --out: put it on storage all nodes share)"
        raise fail(f"{exc}{where}") from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc
    return trainer


def _fit(
    trainer: Any,
    ds: TransitionDataset,
    cfg: Any,
    dev: Any,
    out: Path,
    main: bool,
    resume: bool,
    until: int | None,
    checkpoint_every: int,
    eval_episodes: int,
    progress: bool,
) -> None:
    """Train to the end (or `until`), checkpointing; rank 0 then writes the summary, curves and eval."""
    from contextlib import nullcontext

    from training.device import on_device
    from training.metrics import MetricsWriter, plot_learning_curves, tensorboard_available

    def on_step(step: int) -> None:
        if main and step % checkpoint_every == 0:
            trainer.save(out)

    metrics = (
        MetricsWriter(out, resume=resume, tensorboard=tensorboard_available()) if main else nullcontext()
    )
    with metrics as writer:
        with on_device(dev):
            trainer.fit(until=until, on_log=writer, on_step=on_step)
            summary = trainer.summary()
            if main:
                trainer.save(out)
        if writer is None:  # ranks other than 0 write nothing
            return
        if trainer.step < trainer.total_steps:
            console.print(
                f"stopped at step {trainer.step} of {trainer.total_steps}; checkpoint in {out} "
                "(continue with --resume)"
            )
            return
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        for line in describe_summary(summary):
            console.print(line, markup=False, style="yellow" if line.startswith("warning:") else None)
        plot_learning_curves(out)
        if eval_episodes > 0 and ds.env_id:
            result = _final_eval(trainer, ds, cfg.seed, eval_episodes, progress)
            writer.scalars("eval", result, trainer.step)
            (out / "eval.json").write_text(json.dumps(result, indent=2))
            console.print(
                f"[bold]{cfg.algo}[/] {ds.name} in {ds.env_id}: return {result['mean_return']:.1f} ± "
                f"{result['std_return']:.1f} over {eval_episodes} episodes"
            )
    console.print(f"run saved in {out}")


def _final_eval(
    trainer: Any, ds: TransitionDataset, seed: int, episodes: int, progress: bool
) -> dict[str, Any]:
    """The end-of-training evaluation, on CPU (the env steps there; the policy is small)."""
    import torch

    from training.eval import evaluate

    assert ds.env_id is not None
    policy = trainer.policy().to(torch.device("cpu"))
    refs = ds.ref_scores
    own = (refs["ref_min_score"], refs["ref_max_score"]) if len(refs) == 2 else None
    return evaluate(policy, ds.env_id, episodes, seed=seed + 10_000, own_refs=own, progress=progress)


def describe_summary(summary: dict[str, Any]) -> list[str]:
    """The run summary in the lines a user reads before any rollout."""
    lines = []
    critic = summary.get("critic")
    check = summary.get("critic_check", {})
    if check.get("method") == "n-step":  # episodes too short for whole returns (training.diagnostics)
        against = f"held-out {check['horizon']}-step returns + γ^{check['horizon']}·Q"
    else:
        against = "held-out returns"
    if critic and critic.get("q_mc_corr") is not None:
        lines.append(
            f"critic vs {against}: corr {critic['q_mc_corr']:.3f}, bias {critic['q_mc_bias']:+.2f} "
            f"({critic['q_mc_rows']} steps; reward scale {summary['reward_scale']:.4g})"
        )
    if critic and critic.get("q_data_rank") is not None:
        corr = critic.get("adv_mc_corr")
        corr_text = "n/a (no spread)" if corr is None else f"{corr:.3f}"
        lines.append(
            f"critic within states (vs the policy's samples): advantage corr {corr_text}, dataset action "
            f"above {critic['q_data_rank']:.0%} of samples"
        )
    for r in summary.get("renewals", []):
        lines.append(
            f"renewal {r['renewal']} at step {r['step']}: β_eff {r['beta_eff']:.4g}, ESS/(M+1) "
            f"{r['ess_fraction']:.3f}, dataset-action weight {r['data_weight']:.3f}"
        )
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return lines


@dataclass
class Target:
    """One thing `qipo eval` evaluates: a `Policy`, how to name it, the env it records, and how to let go
    of it (a server's connection pool)."""

    policy: Policy
    label: str
    env_id: str | None
    what: str  # how messages name it
    close: Callable[[], None] = lambda: None


def open_target(path: Path) -> Target:
    """A run directory (torch checkpoint) or an artifact directory, loaded as the server loads it: every
    file's sha256 checked against the manifest, bounds applied (`OnnxPolicy`). ValueError says why not."""
    if (path / MANIFEST_NAME).exists():
        from service.artifact import ArtifactError
        from service.runtime import OnnxPolicy

        try:
            artifact = OnnxPolicy.load(path, provider="cpu")
        except ArtifactError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return Target(artifact, f"{path.name} (onnx)", artifact.metadata.env_id, f"{path}")
    from training.checkpoint import policy_from_checkpoint

    policy, cfg, _ = policy_from_checkpoint(path)
    return Target(policy, f"{path.name} ({cfg.algo})", recorded_env(path), f"{path}")


def open_server(url: str) -> Target:
    """The policy served at `url` (`RemotePolicy`: seeded requests reproduce an in-process evaluation of
    the same artifact); the env is the served manifest's."""
    from qipo_client import RemotePolicy, ServerError

    remote = RemotePolicy(url)
    try:
        meta = remote.metadata
    except ServerError as exc:
        remote.close()
        raise fail(f"server {url}: cannot read /v1/models ({exc})") from exc
    what = f"server {url} ({meta.name} v{meta.version})"
    return Target(remote, f"{url} (server)", meta.env_id, what, remote.close)


def recorded_env(run: Path) -> str | None:
    """The env id a run directory records (its dataset's, or the --env it was trained with)."""
    record = run / RUN_DATASET_FILE
    if not record.exists():
        return None
    env_id = json.loads(record.read_text()).get("env_id")
    return str(env_id) if env_id else None


def evaluate_target(
    target: Target, env: str | None, episodes: int, seed: int, progress: bool
) -> dict[str, Any]:
    """`evaluate` on one target, in the env given or the one it records; fails with what to pass."""
    from qipo_client import ServerError

    from training.eval import evaluate

    env_id = env or target.env_id
    if not env_id:
        raise fail(f"{target.what} records no env id (none was recorded at training); pass --env ENV_ID")
    meta = target.policy.metadata
    check_env(env_id, meta.obs_dim, meta.act_dim, target.what)
    try:
        return evaluate(target.policy, env_id, episodes, seed, progress=progress)
    except ServerError as exc:
        raise fail(f"{target.what}: {exc}") from exc


def eval_command(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run directories or exported artifact directories")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(help="gymnasium env id (default: the env each run, manifest or server records)"),
    ] = None,
    episodes: Annotated[int, typer.Option(min=1)] = 10,
    seed: int = 10_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results here")] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Also evaluate the policy served at this URL (POST /act)")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate policies in gymnasium with fixed seeds and print them side by side."""
    if not runs and not server:
        raise fail("nothing to evaluate: give run/artifact directories and/or --server URL")
    table = Table("policy", "env", "mean return", "std", "normalised (own refs)", "episodes")
    results = {}
    targets: list[Path | str] = [*(runs or []), *([server] if server else [])]
    for path in targets:
        try:
            target = open_server(path) if isinstance(path, str) else open_target(path)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
        try:
            res = evaluate_target(target, env, episodes, seed, show_progress(quiet))
        finally:
            target.close()
        label = target.label
        results[str(path)] = res
        score = res["normalized_score"]
        table.add_row(
            label,
            res["env_id"],
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
    name: Annotated[
        str | None,
        typer.Option(help="Model name in the registry (default: from the dataset, e.g. reacher-mixed)"),
    ] = None,
    env: Annotated[
        str | None, typer.Option("--env", help="gymnasium env id to record (default: the run's)")
    ] = None,
    scores: Annotated[Path | None, typer.Option(help="`qipo eval --json` output to record")] = None,
    atol: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Largest |ONNX − torch| action difference accepted (raw action units); long chunked "
            "VP-diffusion samplers accumulate float32 rounding a little above the default",
        ),
    ] = 1e-5,
) -> None:
    """Export the K-step sampler to ONNX with a manifest (parity-checked against torch)."""
    from training.checkpoint import policy_from_checkpoint
    from training.export import ExportError, export_artifact, model_name_for

    try:
        policy, cfg, _ = policy_from_checkpoint(run)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    record = run / RUN_DATASET_FILE
    dataset = json.loads(record.read_text()) if record.exists() else {}
    env_id = env or dataset.get("env_id")
    if env:
        check_env(env, policy.normalizer.obs_dim, policy.normalizer.act_dim, f"run {run}")
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
            name=name or model_name_for(dataset, run),
            variant=variant,
            training_config=cfg.model_dump(mode="json"),
            dataset=dataset,
            scores=recorded,
            env_id=env_id,
            atol=atol,
        )
    except (ExportError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"exported {manifest.name} to {out} (env {manifest.env_id or 'not recorded'}, parity "
        f"{manifest.export_parity_max_abs_err:.1e}, sha256 {manifest.files['policy.onnx'].sha256[:12]}…)"
    )


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    sys.exit(0)
