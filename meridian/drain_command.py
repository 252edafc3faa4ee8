"""`meridian edge drain NODE`: take an edge node out of placement and, with --wait, wait until it
runs no backend any more (then it can be stopped or upgraded without cutting anyone off)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer

from meridian.commands import DEFAULT_URL, JsonOption, TokenOption, UrlOption, _run, console
from sync.models import NODE_ID_PATTERN

POLL_S = 1.0


def _show(status: dict[str, Any]) -> None:
    state = "draining" if status["draining"] else "taking backends"
    console.print(
        f"{status['id']} ({status['region']}): {state}, {status['backends']} live backend(s), "
        f"{status['stopping']} stopping" + (" — empty" if status["empty"] else ""),
        highlight=False,
    )


def drain(
    node: Annotated[str, typer.Argument(help="Edge node id (nd-…; `meridian regions` lists them).")],
    undo: Annotated[bool, typer.Option("--undo", help="End the drain: the node takes new backends again.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the node runs no backend.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 3600.0,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drain an edge node: no new backends, idle ones stop, busy ones finish; --wait until empty."""
    if not re.fullmatch(NODE_ID_PATTERN, node):
        raise typer.BadParameter(f"{node!r} is not a node id (nd-…)")
    status = _run(url, token, "POST", f"/v1/nodes/{node}/drain", json={"draining": not undo})
    deadline = time.monotonic() + timeout
    while wait and not undo and not status["empty"]:
        if not as_json:
            _show(status)
        if time.monotonic() >= deadline:
            console.print(f"[red]not empty after {timeout:g} s[/red]")
            raise typer.Exit(1)
        time.sleep(POLL_S)
        status = _run(url, token, "GET", f"/v1/nodes/{node}/drain")
    if as_json:
        console.print_json(data=status)
    else:
        _show(status)
