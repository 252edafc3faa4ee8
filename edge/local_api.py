"""The edge's own endpoints: health, status, and connect (answered from the replica when it can)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from edge import keys as app_keys
from edge.access import active_signing_key, api_caller, confined_connect
from edge.browser_urls import add_routing_urls
from edge.telemetry import connect_outcome, control_call
from sync import tokens
from sync.errors import BadRequest, ControlPlaneUnreachable, PayloadTooLarge
from sync.models import BackendStatus, ConnectRequest, Scope
from sync.timing import CONNECTION_TOKEN_TTL_S

MAX_API_BODY = 1 << 20


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    app = request.app
    loop = app[app_keys.SYNC_LOOP]
    last = loop.last_sync_at
    return web.json_response(
        {
            "region": app[app_keys.SETTINGS].region,
            "node_id": app[app_keys.NODE_ID],
            "applied_version": app[app_keys.REPLICA].applied_version or 0,
            "control_plane": "reachable" if loop.reachable else "unreachable",
            "last_sync_at": last.isoformat() if last else None,
            "backends_running": app[app_keys.DRONE].running(),
            "fast_path_share": _fast_path_share(app),
            "draining": app[app_keys.DRAIN].draining,
        }
    )


def _fast_path_share(app: web.Application) -> float | None:
    """Of the proxied requests the raw-transport path saw, the share it served (not handed over)."""
    fast = app[app_keys.PROXY].fast_path
    return None if fast is None else fast.fast_path_share()


async def _read_connect(request: web.Request) -> ConnectRequest:
    if request.content_length is not None and request.content_length > MAX_API_BODY:
        raise PayloadTooLarge("request body is larger than 1 MiB")
    raw = await request.content.read(MAX_API_BODY + 1)
    if len(raw) > MAX_API_BODY:
        raise PayloadTooLarge("request body is larger than 1 MiB")
    try:
        return ConnectRequest.model_validate_json(raw)
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
        raise BadRequest("the request is not valid", fields=fields) from exc


async def connect(request: web.Request) -> web.Response:
    with connect_outcome(request.app) as outcome:
        response = await _connect(request)
        outcome.value = request.get(CONNECT_OUTCOME, "forwarded")
        return response


CONNECT_OUTCOME = web.RequestKey("connect_outcome", str)
"""How `_connect` answered, for the connect metric: `replica`, `forwarded`, or the control plane's error code."""


async def _connect(request: web.Request) -> web.Response:
    app = request.app
    replica = app[app_keys.REPLICA]
    caller = api_caller(replica, request.headers.get("Authorization"), Scope.CLIENT, Scope.EDGE)
    body = confined_connect(caller, await _read_connect(request))
    if body.key is not None:
        answer = _from_replica(request, body)
        if answer is not None:
            request[CONNECT_OUTCOME] = "replica"
            return web.json_response(add_routing_urls(app[app_keys.SETTINGS], answer))
    trusted = set(caller["scopes"]) & {Scope.ADMIN.value, Scope.EDGE.value}
    forwarded = body.model_dump(mode="json", exclude_none=True)
    if not trusted:
        forwarded.pop("client_ip", None)  # only trusted callers may speak for a user's address
    headers = {
        "X-Forwarded-For": request.remote or "",
        "X-Meridian-Arrival-Region": app[app_keys.SETTINGS].region,
        "X-Meridian-Caller": caller["token_id"],
    }
    try:
        with control_call(app, "POST /v1/connect", headers):
            status_code, payload = await app[app_keys.CONTROL].connect(forwarded, headers)
    except ControlPlaneUnreachable as exc:
        raise ControlPlaneUnreachable(
            "the control plane is unreachable and this key has no live backend known to this edge",
            retry_after_s=2.0,
        ) from exc
    if status_code == 200 and isinstance(payload, dict):
        payload = add_routing_urls(app[app_keys.SETTINGS], payload)
    if status_code >= 400 and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        request[CONNECT_OUTCOME] = str(payload["error"].get("code", status_code))[:64]
    return web.json_response(payload, status=status_code)


def _from_replica(request: web.Request, body: ConnectRequest) -> dict[str, Any] | None:
    """The answer for a key whose ready backend the replica knows, without the control plane."""
    app = request.app
    replica = app[app_keys.REPLICA]
    assert body.key is not None
    backend = replica.live_backend_for_key(body.key)
    if backend is None or backend["status"] != BackendStatus.READY or backend["template_name"] != body.template:
        return None
    key = active_signing_key(replica)
    region = replica.region(backend["region"])
    if key is None or region is None:
        return None
    token = tokens.sign(tokens.claims_now(backend["id"], body.user, CONNECTION_TOKEN_TTL_S), key["id"], key["secret"])
    edge_url = region["edge_url"].rstrip("/")
    control_url = app[app_keys.CONTROL].base_url
    return {
        "backend_id": backend["id"],
        "key": backend["key"],
        "spawned": False,
        "status": backend["status"],
        "region": backend["region"],
        "edge_url": edge_url,
        "url": f"{edge_url}/{token}/",
        "token": token,
        "fencing_token": backend["fencing_token"],
        "status_url": f"{control_url}/v1/backends/{backend['id']}",
        "placement": {"region": backend["region"], "reason": "existing", "distance_km": None},
    }
