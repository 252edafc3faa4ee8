"""Client commands of the CLI: connect, status, regions, templates."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from meridian.client import ApiClient
from sync.errors import MeridianError

console = Console()

UrlOption = Annotated[str, typer.Option("--url", envvar="MERIDIAN_URL", help="Control plane (or edge) URL.")]
TokenOption = Annotated[str | None, typer.Option("--token", envvar="MERIDIAN_TOKEN", help="API token (Bearer).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
DEFAULT_URL = "http://127.0.0.1:8700"


def _run(url: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    try:
        with ApiClient(url, token) as api:
            return api.call(method, path, **kw)
    except MeridianError as exc:
        console.print(f"[red]error[/red] {exc.code.value}: {exc.message}", highlight=False)
        if exc.fields:
            console.print(json.dumps(exc.fields, indent=2), highlight=False)
        raise typer.Exit(1) from exc


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
    body: dict[str, Any] = {"template": template}
    for name, value in (("key", key), ("region", region), ("client_ip", client_ip), ("user", user)):
        if value is not None:
            body[name] = value
    if (lat is None) != (lon is None):
        raise typer.BadParameter("give both --lat and --lon")
    if lat is not None:
        body["location"] = {"lat": lat, "lon": lon}
    answer = _run(url, token, "POST", "/v1/connect", json=body, params={"explain": "true"} if explain else None)
    if as_json:
        console.print_json(data=answer)
        return
    placement = answer["placement"]
    console.print(f"backend   {answer['backend_id']}  ({'spawned' if answer['spawned'] else 'existing'})")
    console.print(f"status    {answer['status']}  fencing token {answer['fencing_token']}")
    distance = placement.get("distance_km")
    where = f"{placement['region']}  reason {placement['reason']}"
    console.print(f"region    {where}" + (f"  {distance} km" if distance is not None else ""))
    console.print(f"url       {answer['url']}", soft_wrap=True)
    if explain and placement.get("ranking"):
        table = Table("rank", "region", "distance km", "eligible", "why not", "load")
        for i, row in enumerate(placement["ranking"], 1):
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
    answer = _run(url, token, "GET", "/v1/regions")
    if as_json:
        console.print_json(data=answer)
        return
    table = Table("region", "lat, lon", "node", "healthy", "load", "applied version")
    for region in answer:
        nodes = region["nodes"] or [None]
        for i, node in enumerate(nodes):
            first = i == 0
            table.add_row(
                region["name"] if first else "",
                f"{region['lat']:.2f}, {region['lon']:.2f}" if first else "",
                node["id"] if node else "(no node)",
                ("yes" if node["healthy"] else "[red]no[/red]") if node else "",
                f"{node['backends']}/{node['capacity']}" if node else "",
                str(node["applied_version"]) if node else "",
            )
    console.print(table)


def templates(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """Templates and their content-addressed ids."""
    answer = _run(url, token, "GET", "/v1/templates")
    if as_json:
        console.print_json(data=answer)
        return
    table = Table("name", "id", "executor", "command / image")
    for t in answer:
        spec = t["spec"]
        what = " ".join(spec.get("argv") or []) or spec.get("image") or ""
        table.add_row(t["name"], t["id"][:15] + "…", spec["executor"], what)
    console.print(table)


def status(url: UrlOption = DEFAULT_URL, token: TokenOption = None, as_json: JsonOption = False) -> None:
    """The system version and how far each edge node has applied it."""
    health = _run(url, token, "GET", "/healthz")
    regions_ = _run(url, token, "GET", "/v1/regions")
    if as_json:
        console.print_json(data={"health": health, "regions": regions_})
        return
    version = health["version"]
    console.print(f"control plane {url}: {health['status']}, system version {version}")
    for region in regions_:
        for node in region["nodes"]:
            lag = version - node["applied_version"]
            state = "healthy" if node["healthy"] else "[red]unhealthy[/red]"
            console.print(f"  {region['name']:<14} {node['id']:<24} {state}  behind by {lag} version(s)")
