"""Client commands of the CLI: connect, status, regions, templates."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from meridian.client import Meridian
from sync.errors import MeridianError

T = TypeVar("T")

console = Console()

UrlOption = Annotated[str, typer.Option("--url", envvar="MERIDIAN_URL", help="Control plane (or edge) URL.")]
TokenOption = Annotated[str | None, typer.Option("--token", envvar="MERIDIAN_TOKEN", help="API token (Bearer).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
DEFAULT_URL = "http://127.0.0.1:8700"


def _call(url: str, token: str | None, what: Callable[[Meridian], T]) -> T:
    """One call with the Python client; an error answer is printed and exits with status 1."""
    try:
        with Meridian(url, token) as api:
            return what(api)
    except MeridianError as exc:
        console.print(f"[red]error[/red] {exc.code.value}: {exc.message}", highlight=False)
        if exc.fields:
            console.print(json.dumps(exc.fields, indent=2), highlight=False)
        raise typer.Exit(1) from exc


def _run(url: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    """Any call, answered as raw JSON."""
    return _call(url, token, lambda api: api.request(method, path, **kw))


def connect(
    template: Annotated[str, typer.Option(help="Template name.")],
    key: Annotated[str | None, typer.Option(help="Key (omit to always spawn).")] = None,
    region: Annotated[str | None, typer.Option(help="Pin a region.")] = None,
    lat: Annotated[float | None, typer.Option(help="User latitude.")] = None,
    lon: Annotated[float | None, typer.Option(help="User longitude.")] = None,
    client_ip: Annotated[str | None, typer.Option(help="User IP (admin/edge tokens only).")] = None,
    user: Annotated[str | None, typer.Option(help="User the connection token is for.")] = None,
    explain: Annotated[bool, typer.Option(help="Show the placement ranking.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Connect to the key's backend, spawning it near the user if needed."""
    if (lat is None) != (lon is None):
        raise typer.BadParameter("give both --lat and --lon")
    location = (lat, lon) if lat is not None and lon is not None else None
    answer = _call(
        url,
        token,
        lambda api: api.connect(
            key, template, region=region, location=location, client_ip=client_ip, user=user, explain=explain
        ),
    )
    if as_json:
        console.print_json(data=answer.raw)
        return
    placement = answer.placement
    console.print(f"backend   {answer.backend_id}  ({'spawned' if answer.spawned else 'existing'})")
    console.print(f"status    {answer.status}  fencing token {answer.fencing_token}")
    distance = placement.distance_km
    where = f"{placement.region}  reason {placement.reason}"
    console.print(f"region    {where}" + (f"  {distance} km" if distance is not None else ""))
    console.print(f"url       {answer.url}", soft_wrap=True)
    if explain and placement.ranking:
        table = Table("rank", "region", "distance km", "eligible", "why not", "load")
        for i, row in enumerate(placement.ranking, 1):
            dist = row.get("distance_km")
            table.add_row(
                str(i),
                row["name"],
                "" if dist is None else f"{dist:.1f}",
                "yes" if row["eligible"] else "no",
                row.get("why_not") or "",
                f"{row['load']:.2f}",
            )
        console.print(table)


def regions(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Regions with their edge nodes: health, load and applied version."""
    answer = _call(url, token, lambda api: api.regions())
    if as_json:
        console.print_json(data=[r.raw for r in answer])
        return
    table = Table("region", "lat, lon", "node", "healthy", "load", "applied version")
    for region in answer:
        if not region.nodes:
            table.add_row(region.name, f"{region.lat:.2f}, {region.lon:.2f}", "(no node)", "", "", "")
        for i, node in enumerate(region.nodes):
            table.add_row(
                "" if i else region.name,
                "" if i else f"{region.lat:.2f}, {region.lon:.2f}",
                node.id,
                "yes" if node.healthy else "[red]no[/red]",
                f"{node.backends}/{node.capacity}",
                str(node.applied_version),
            )
    console.print(table)


def templates(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Templates and their content-addressed ids."""
    answer = _call(url, token, lambda api: api.templates())
    if as_json:
        console.print_json(data=[t.raw for t in answer])
        return
    table = Table("name", "id", "executor", "command / image")
    for t in answer:
        what = " ".join(t.spec.get("argv") or []) or t.spec.get("image") or ""
        executor = t.spec.get("executor") or t.raw.get("executor", "")  # non-admin tokens see no spec
        table.add_row(t.name, t.id[:15] + "…", str(executor), what)
    console.print(table)


def status(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """The system version and how far each edge node has applied it."""
    health = _call(url, token, lambda api: api.health())
    regions_ = _call(url, token, lambda api: api.regions())
    if as_json:
        console.print_json(data={"health": health, "regions": [r.raw for r in regions_]})
        return
    version = health["version"]
    console.print(f"control plane {url}: {health['status']}, system version {version}")
    for region in regions_:
        for node in region.nodes:
            state = "healthy" if node.healthy else "[red]unhealthy[/red]"
            behind = version - node.applied_version
            console.print(f"  {region.name:<14} {node.id:<24} {state}  behind by {behind} version(s)")
