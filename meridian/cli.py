"""The `meridian` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Meridian: per-key session backends near their users."
)
control_app = typer.Typer(no_args_is_help=True, help="Run the control plane.")
app.add_typer(control_app, name="control")
edge_app = typer.Typer(no_args_is_help=True, help="Run an edge node.")
app.add_typer(edge_app, name="edge")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@control_app.command("serve")
def control_serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8700,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Local state (embedded PostgreSQL lives here).")] = Path(
        ".meridian/control"
    ),
    admin_token: Annotated[
        str | None, typer.Option(envvar="MERIDIAN_ADMIN_TOKEN", help="Bootstrap admin token (≥16 chars).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="MERIDIAN_DATABASE_URL", help="PostgreSQL URL; default: embedded.")
    ] = None,
    geoip_db: Annotated[
        Path | None, typer.Option(envvar="MERIDIAN_GEOIP_DB", help="GeoIP2/GeoLite2 City .mmdb file.")
    ] = None,
    default_region: Annotated[str | None, typer.Option(help="Region used when nothing else places.")] = None,
    public_url: Annotated[str | None, typer.Option(help="URL clients reach this control plane at.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve the control plane (starts an embedded PostgreSQL in DATA_DIR unless --database-url)."""
    from pydantic import ValidationError

    from control.embedded_db import EmbeddedPostgresError
    from control.placement import GeoIPDatabaseError
    from control.server import serve
    from control.settings import ControlSettings

    _logging(verbose)
    overrides: dict[str, object] = {"port": port, "host": host, "data_dir": data_dir}
    for name, value in (
        ("admin_token", admin_token),
        ("database_url", database_url),
        ("geoip_db", geoip_db),
        ("public_url", public_url),
    ):
        if value is not None:
            overrides[name] = value
    if default_region:
        overrides["placement"] = {"default_region": default_region}  # validated with the rest, not assigned after
    try:
        settings = ControlSettings(**overrides)  # type: ignore[arg-type]
        serve(settings)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except (GeoIPDatabaseError, EmbeddedPostgresError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@edge_app.command("serve")
def edge_serve(
    region: Annotated[str, typer.Option(help="Region this edge serves.")],
    control_url: Annotated[str, typer.Option(envvar="MERIDIAN_CONTROL_URL", help="Control plane URL.")],
    token: Annotated[str, typer.Option(envvar="MERIDIAN_EDGE_TOKEN", help="API token with the edge scope.")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8701,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Replica cache, node id and backend logs.")] = Path(".meridian/edge"),
    capacity: Annotated[
        int, typer.Option(envvar="MERIDIAN_EDGE_CAPACITY", help="Most live backends on this node.")
    ] = 100,
    public_url: Annotated[
        str | None, typer.Option(envvar="MERIDIAN_EDGE_PUBLIC_URL", help="URL users reach this edge at.")
    ] = None,
    edge_domain: Annotated[str | None, typer.Option(help="Domain for <backend-id>.<domain> routing.")] = None,
    shutdown_drain_s: Annotated[
        float,
        typer.Option(
            envvar="MERIDIAN_EDGE_SHUTDOWN_DRAIN_S",
            help="On SIGTERM, drain for up to this many seconds before stopping backends (0: at once).",
        ),
    ] = 0.0,
    on_exit: Annotated[
        str,
        typer.Option(
            envvar="MERIDIAN_EDGE_ON_EXIT",
            help="On SIGTERM/SIGINT: `stop` the backends, or `keep` them running for the next edge "
            "on this data dir to adopt (upgrades). SIGUSR2 always keeps them.",
        ),
    ] = "stop",
    internal_url: Annotated[str | None, typer.Option(help="URL other edges reach this edge at.")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Largest proxied request body.")] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="An origin allowed to call /v1/connect from a browser (repeatable).")
    ] = None,
    dns_server: Annotated[
        list[str] | None,
        typer.Option(help="DNS server (IP or IP:PORT) for a dns+srv:// control URL; repeatable."),
    ] = None,
    nomad_addr: Annotated[
        str | None,
        typer.Option(
            envvar="NOMAD_ADDR",
            help="Nomad API address: run `executor: nomad` templates as Nomad jobs "
            "(NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION are read from the environment).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve an edge node: sync, proxy, run backends, heartbeat."""
    from pydantic import ValidationError

    from edge.app import serve
    from edge.settings import EdgeSettings

    _logging(verbose)
    try:
        settings = EdgeSettings(
            region=region,
            control_url=control_url,
            token=token,
            port=port,
            host=host,
            data_dir=data_dir,
            capacity=capacity,
            public_url=public_url,
            edge_domain=edge_domain,
            shutdown_drain_s=shutdown_drain_s,
            on_exit=on_exit,  # type: ignore[arg-type]
            internal_url=internal_url,
            cors_origins=cors_origin or [],
            # Every value goes through the constructor: model_copy(update=...) would skip validation.
            **({"max_body_bytes": max_body_bytes} if max_body_bytes is not None else {}),  # type: ignore[arg-type]
            **({"dns_nameservers": dns_server} if dns_server else {}),  # type: ignore[arg-type]
            **({"nomad_addr": nomad_addr} if nomad_addr else {}),  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    serve(settings)


@app.command()
def dev(
    regions: Annotated[str, typer.Option(help="Comma-separated region names.")] = "eu-west,us-east,ap-northeast",
    port: Annotated[int, typer.Option(help="Control plane port; edges take the next ones.")] = 8700,
    data_dir: Annotated[Path, typer.Option(help="Where the cluster keeps its state and logs.")] = Path(".meridian/dev"),
    admin_token: Annotated[str | None, typer.Option(help="Admin token (default: a new random one).")] = None,
) -> None:
    """Run a local multi-region cluster: PostgreSQL, control plane, one edge per region."""
    from meridian.dev import DevError, run

    try:
        raise typer.Exit(run([r.strip() for r in regions.split(",") if r.strip()], port, data_dir, admin_token))
    except DevError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


from meridian import commands  # noqa: E402
from meridian.drain_command import drain as edge_drain  # noqa: E402

edge_app.command("drain")(edge_drain)

app.command()(commands.connect)
app.command()(commands.regions)
app.command()(commands.templates)
app.command()(commands.status)


def main() -> None:
    app()
