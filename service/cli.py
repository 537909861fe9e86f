"""The `qipo` command. Serving and registry commands live here (torch-free); training commands are found
through the `qipo.commands` entry-point group and imported only when one of them is invoked."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from service import canary
from service.registry import ModelVersion, Registry, RegistryError, open_registry

T = TypeVar("T")

app = typer.Typer(help="Train QIPO flow policies offline and serve them to robots.", no_args_is_help=True)
registry_app = typer.Typer(help="Publish, list and promote model versions.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
console = Console()

RegistryOpt = Annotated[
    str, typer.Option("--registry", "-r", envvar="QIPO_REGISTRY", help="Directory or redis://host:port/db")
]
PrefixOpt = Annotated[str, typer.Option("--prefix", envvar="QIPO_REGISTRY_PREFIX", help="Redis key prefix")]


def fail(message: str) -> typer.Exit:
    """One readable line on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@app.command()
def serve(
    registry: RegistryOpt = "./registry",
    model: Annotated[str, typer.Option(envvar="QIPO_MODEL_NAME", help="Model name")] = "pendulum-qipo",
    ref: Annotated[str, typer.Option(envvar="QIPO_MODEL_REF", help="Alias or version")] = "production",
    host: Annotated[str, typer.Option(envvar="QIPO_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="QIPO_PORT")] = 8000,
) -> None:
    """Serve POST /act with ONNX Runtime (other settings: QIPO_* environment, see README)."""
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging
    from service.settings import ServeSettings

    settings = ServeSettings(registry=registry, model_name=model, model_ref=ref, host=host, port=port)
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our JSON handler for uvicorn's loggers too
        access_log=False,  # one line per /act at 50 Hz per robot is noise; metrics count requests
    )


def _registry_call(registry: str, prefix: str, action: Callable[[Registry], T]) -> T:
    """Open the registry and run one action; a RegistryError becomes one readable line and exit 1."""
    try:
        return action(open_registry(registry, prefix))
    except RegistryError as exc:
        raise fail(str(exc)) from exc


@registry_app.command("publish")
def registry_publish(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `qipo export`")],
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Also point these aliases at it")] = None,
) -> None:
    """Store an artifact as the next immutable version of its model."""

    def publish(reg: Registry) -> ModelVersion:
        mv = reg.publish(artifact)
        for name in alias or []:
            reg.promote(mv.name, name, mv.version)
        return mv

    mv = _registry_call(registry, prefix, publish)
    console.print(
        f"published [bold]{mv.name}[/] version [bold]{mv.version}[/]" + (f" as {alias}" if alias else "")
    )


@registry_app.command("list")
def registry_list(registry: RegistryOpt = "./registry", prefix: PrefixOpt = "qipo") -> None:
    """Models, versions and aliases."""

    def rows(reg: Registry) -> Table:
        table = Table("model", "version", "variant", "published", "aliases", "score")
        for name in reg.models():
            aliases = reg.aliases(name)
            for mv in reg.versions(name):
                names = ", ".join(a for a, v in sorted(aliases.items()) if v == mv.version)
                score = mv.manifest.scores.get("mean_return")
                table.add_row(
                    name,
                    str(mv.version),
                    mv.manifest.variant,
                    mv.published_at[:19],
                    names,
                    "" if score is None else f"{score:.1f}",
                )
        return table

    console.print(_registry_call(registry, prefix, rows))


@registry_app.command("show")
def registry_show(
    name: str, ref: str = "production", registry: RegistryOpt = "./registry", prefix: PrefixOpt = "qipo"
) -> None:
    """Print one version's manifest (ref: alias or version)."""
    mv = _registry_call(registry, prefix, lambda reg: reg.get(name, reg.resolve(name, ref)))
    typer.echo(json.dumps(mv.model_dump(mode="json"), indent=2))


@registry_app.command("promote")
def registry_promote(
    name: str,
    ref: Annotated[str, typer.Argument(help="Version number or alias to point at")],
    alias: Annotated[str, typer.Option(help="Alias to move")] = "production",
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Move an alias to a version atomically."""
    move = _registry_call(registry, prefix, lambda reg: reg.promote(name, alias, ref))
    console.print(f"{name}:{alias} {move.from_version} -> {move.to_version}")


@registry_app.command("rollback")
def registry_rollback(
    name: str,
    alias: Annotated[str, typer.Option(help="Alias to move back")] = "production",
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Point an alias back at the version it had before its last move."""
    move = _registry_call(registry, prefix, lambda reg: reg.rollback(name, alias))
    console.print(f"{name}:{alias} {move.from_version} -> {move.to_version}")


@registry_app.command("pull")
def registry_pull(
    name: str,
    dest: Path,
    ref: str = "production",
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Copy a version into a directory and verify its sha256."""

    def pull(reg: Registry) -> int:
        version = reg.resolve(name, ref)
        reg.pull(name, version, dest)
        return version

    version = _registry_call(registry, prefix, pull)
    console.print(f"pulled {name} version {version} into {dest}")


@registry_app.command("gc")
def registry_gc(
    name: str,
    retention: Annotated[
        float, typer.Option("--older-than", help="Keep versions published less than this many hours ago")
    ] = 24 * 7,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed")] = False,
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Remove versions no alias points to and older than the retention (the newest is always kept)."""
    removed = _registry_call(registry, prefix, lambda reg: reg.gc(name, retention * 3600.0, dry_run=dry_run))
    verb = "would remove" if dry_run else "removed"
    console.print(f"{name}: {verb} versions {removed}" if removed else f"{name}: nothing to remove")


canary_app = typer.Typer(help="Route a share of robots to a candidate version, then promote or abort.")
registry_app.add_typer(canary_app, name="canary")


@canary_app.command("start")
def canary_start(
    name: str,
    ref: Annotated[str, typer.Argument(help="Version number or alias to try")],
    share: Annotated[float, typer.Option(help="Fraction of robots (by robot_id hash), 0..1")] = 0.1,
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Point the `canary` alias at a version; robots in `share` are served it (sticky by robot_id)."""
    move = _registry_call(registry, prefix, lambda reg: canary.start(reg, name, ref, share))
    console.print(f"{name}:canary {move.from_version} -> {move.to_version} for {share:.0%} of robots")


@canary_app.command("promote")
def canary_promote(name: str, registry: RegistryOpt = "./registry", prefix: PrefixOpt = "qipo") -> None:
    """Production takes the canary's version; the canary alias is removed."""
    move = _registry_call(registry, prefix, lambda reg: canary.promote(reg, name))
    console.print(f"{name}:production {move.from_version} -> {move.to_version} (canary promoted)")


@canary_app.command("abort")
def canary_abort(name: str, registry: RegistryOpt = "./registry", prefix: PrefixOpt = "qipo") -> None:
    """Remove the canary alias; its robots return to production."""
    move = _registry_call(registry, prefix, lambda reg: canary.abort(reg, name))
    console.print(f"{name}: canary on version {move.from_version} aborted")


def _missing_extra(ep: EntryPoint, exc: Exception) -> Any:
    def command(ctx: typer.Context) -> None:
        raise fail(
            f"`qipo {ep.name}` needs the training extra ({exc}); install it with "
            "`pip install torch==2.13.0 && pip install -e '.[cpu,train]'`"
        )

    return command


def _register_plugins(argv: list[str]) -> None:
    """Add the training commands; import only the one being invoked (torch is slow to import)."""
    wanted = argv[1] if len(argv) > 1 else None
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    for ep in entry_points(group="qipo.commands"):
        if ep.name != wanted:
            app.command(ep.name, help=f"(training) run `qipo {ep.name} --help`", context_settings=extra)(
                lambda ctx: None
            )
            continue
        try:
            obj = ep.load()
        except ImportError as exc:
            app.command(ep.name, context_settings=extra)(_missing_extra(ep, exc))
            continue
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=ep.name)
        else:
            app.command(ep.name)(obj)


def main() -> None:
    _register_plugins(sys.argv)
    app()


if __name__ == "__main__":
    main()
