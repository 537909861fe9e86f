"""The `qipo` command. Serving and registry commands live here (torch-free); training commands are found
through the `qipo.commands` entry-point group and imported only when one of them is invoked."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from service import __version__, canary
from service.registry import (
    CANARY_ALIAS,
    DirectoryRegistry,
    ModelVersion,
    NotFoundError,
    Registry,
    RegistryError,
    open_registry,
)

T = TypeVar("T")

app = typer.Typer(help="Train QIPO flow policies offline and serve them to robots.", no_args_is_help=True)
registry_app = typer.Typer(help="Publish, list and promote model versions.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
console = Console(soft_wrap=True)  # a message stays one line in a log, whatever the width

RegistryOpt = Annotated[
    str, typer.Option("--registry", "-r", envvar="QIPO_REGISTRY", help="Directory or redis://host:port/db")
]
PrefixOpt = Annotated[str, typer.Option("--prefix", envvar="QIPO_REGISTRY_PREFIX", help="Redis key prefix")]


def fail(message: str) -> typer.Exit:
    """One readable line on stderr, exit code 1."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"qipo {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    """Train QIPO flow policies offline and serve them to robots."""


def _only_model(registry: str, prefix: str) -> str:
    """The model to serve when none is named: the registry's only one, else a line that says which exist."""

    def pick(reg: Registry) -> str:
        _require_exists(reg, registry)
        names = reg.models()
        if len(names) == 1:
            return names[0]
        if not names:
            raise RegistryError(
                f"registry {registry} holds no model; publish one with `qipo registry publish ARTIFACT "
                f"--registry {registry} --alias production`"
            )
        listed = ", ".join(names)
        raise RegistryError(f"registry {registry} holds {len(names)} models ({listed}); pass --model NAME")

    return _registry_call(registry, prefix, pick)


@contextlib.contextmanager
def _artifact_registry(artifact: Path) -> Iterator[tuple[Path, str]]:
    """A throw-away directory registry holding `artifact` as version 1 with alias production."""
    tmp = Path(tempfile.mkdtemp(prefix="qipo-serve-artifact-"))
    try:
        reg = DirectoryRegistry(tmp / "registry")
        try:
            mv = reg.publish(artifact)
        except RegistryError as exc:
            raise fail(str(exc)) from exc
        reg.promote(mv.name, "production", mv.version)
        yield tmp, mv.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@app.command()
def serve(
    registry: RegistryOpt = "./registry",
    model: Annotated[
        str | None,
        typer.Option(envvar="QIPO_MODEL_NAME", help="Model name (default: the registry's only model)"),
    ] = None,
    ref: Annotated[str, typer.Option(envvar="QIPO_MODEL_REF", help="Alias or version")] = "production",
    host: Annotated[str, typer.Option(envvar="QIPO_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="QIPO_PORT")] = 8000,
    prefix: PrefixOpt = "qipo",
    artifact: Annotated[
        Path | None,
        typer.Option(help="Serve this artifact directory alone, without a registry (for a quick look)"),
    ] = None,
) -> None:
    """Serve POST /act with ONNX Runtime (other settings: QIPO_* environment, see docs/serving.md)."""
    from service.settings import ServeSettings

    if artifact is not None:
        with _artifact_registry(artifact) as (tmp, name):
            settings = ServeSettings(
                registry=str(tmp / "registry"),
                model_name=name,
                model_ref="production",
                cache_dir=tmp / "cache",
                follow_registry=False,
                host=host,
                port=port,
            )
            _run_server(settings)
        return
    if model:  # refuse a mistyped location now, not as a traceback from inside the app
        _registry_call(registry, prefix, lambda reg: reg.close())
    name = model or _only_model(registry, prefix)
    settings = ServeSettings(
        registry=registry, registry_prefix=prefix, model_name=name, model_ref=ref, host=host, port=port
    )
    _run_server(settings)


def _run_server(settings: Any) -> None:
    import uvicorn

    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our JSON handler for uvicorn's loggers too
        access_log=False,  # one line per /act at 50 Hz per robot is noise; metrics count requests
    )


def _require_exists(reg: Registry, location: str) -> None:
    """Reading a directory registry that is not there is a mistake worth naming, not an empty result."""
    if isinstance(reg, DirectoryRegistry) and not reg.exists():
        raise RegistryError(
            f"registry directory {location} does not exist; check --registry (or QIPO_REGISTRY), or publish "
            "a model there first with `qipo registry publish ARTIFACT`"
        )


def _registry_call(
    registry: str, prefix: str, action: Callable[[Registry], T], *, read_only: bool = False
) -> T:
    """Open the registry and run one action; a RegistryError becomes one readable line and exit 1.
    A read-only action on a directory that does not exist is refused (reading never creates one)."""
    try:
        reg = open_registry(registry, prefix)
        if read_only:
            _require_exists(reg, registry)
        return action(reg)
    except RegistryError as exc:
        raise fail(str(exc)) from exc


@registry_app.command("publish")
def registry_publish(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `qipo export`")],
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Also point these aliases at it")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even if obs/act dims differ from the previous version")
    ] = False,
) -> None:
    """Store an artifact as the next immutable version of its model."""

    def publish(reg: Registry) -> ModelVersion:
        mv = reg.publish(artifact, force=force)
        for name in alias or []:
            reg.promote(mv.name, name, mv.version)
        return mv

    mv = _registry_call(registry, prefix, publish)
    console.print(
        f"published [bold]{mv.name}[/] version [bold]{mv.version}[/]" + (f" as {alias}" if alias else "")
    )


def _listing(reg: Registry) -> list[dict[str, Any]]:
    rows = []
    for name in reg.models():
        aliases = reg.aliases(name)
        for mv in reg.versions(name):
            m = mv.manifest
            rows.append(
                {
                    "model": name,
                    "version": mv.version,
                    "aliases": [a for a, v in sorted(aliases.items()) if v == mv.version],
                    "env_id": m.env_id or m.dataset.get("env_id"),
                    "obs_dim": m.obs_dim,
                    "act_dim": m.act_dim,
                    "variant": m.variant,
                    "published_at": mv.published_at,
                    "mean_return": m.scores.get("mean_return"),
                }
            )
    return rows


@registry_app.command("list")
def registry_list(
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array of versions instead of a table")
    ] = False,
) -> None:
    """Models, versions and aliases."""
    rows = _registry_call(registry, prefix, _listing, read_only=True)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"registry {registry} holds no model; publish one with `qipo registry publish DIR`")
        return
    table = Table(  # names are what people copy: never folded; the rest may fold (variant: `show`)
        Column("model", no_wrap=True),
        Column("ver"),
        Column("aliases", no_wrap=True),
        Column("env", overflow="fold"),
        Column("dims"),
        Column("published", overflow="fold"),
        Column("score"),
        box=box.SIMPLE_HEAD,
    )
    for row in rows:
        score = row["mean_return"]
        table.add_row(
            row["model"],
            str(row["version"]),
            ", ".join(row["aliases"]),
            row["env_id"] or "",
            f"{row['obs_dim']}→{row['act_dim']}",
            row["published_at"][:16].replace("T", " "),
            "" if score is None else f"{score:.1f}",
        )
    console.print(table)


@registry_app.command("show")
def registry_show(
    name: str, ref: str = "production", registry: RegistryOpt = "./registry", prefix: PrefixOpt = "qipo"
) -> None:
    """Print one version's manifest (ref: alias or version)."""
    mv = _registry_call(registry, prefix, lambda reg: reg.get(name, reg.resolve(name, ref)), read_only=True)
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


@registry_app.command("delete-alias")
def registry_delete_alias(
    name: str,
    alias: Annotated[str, typer.Argument(help="Alias to remove (the versions stay)")],
    registry: RegistryOpt = "./registry",
    prefix: PrefixOpt = "qipo",
) -> None:
    """Remove an alias; servers that follow it keep their model until it points somewhere again."""

    def delete(reg: Registry) -> int:
        if alias == CANARY_ALIAS:
            raise RegistryError(f"use `qipo registry canary abort {name}`: it also clears the canary share")
        current = reg.aliases(name).get(alias)
        if current is None:
            known = ", ".join(sorted(reg.aliases(name))) or "none"
            raise NotFoundError(f"model {name!r} has no alias {alias!r} (aliases: {known})")
        reg.set_alias(name, alias, None, expected=current, reason="delete")
        return current

    version = _registry_call(registry, prefix, delete, read_only=True)
    console.print(f"{name}:{alias} removed (it pointed at version {version})")


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

    version = _registry_call(registry, prefix, pull, read_only=True)
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
