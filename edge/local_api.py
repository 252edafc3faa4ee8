"""The edge's own endpoints: health, status, and connect (answered from the replica when it can)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from edge import keys as app_keys
from edge.access import api_caller, confined_connect
from edge.browser_urls import add_routing_urls
from edge.offline_connect import connect_answer
from edge.telemetry import connect_outcome, control_call
from sync.errors import BadRequest, ControlPlaneUnreachable, PayloadTooLarge
from sync.models import BackendStatus, ConnectRequest, Scope
from sync.state import ApiTokenState

MAX_API_BODY = 1 << 20


async def healthz(request: web.Request) -> web.Response:
    problem = request.app[app_keys.REPLICA].problem
    if problem is not None:  # placement must stop sending this edge backends
        return web.json_response({"status": "unhealthy", "reason": problem}, status=503)
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
            "journal_pending": app[app_keys.JOURNAL].pending,
            "fast_path_share": _fast_path_share(app),
            "draining": app[app_keys.DRAIN].draining,
            "warm_pools": warm_pools(app),
        }
    )


def warm_pools(app: web.Application) -> dict[str, int]:
    """Ready, unclaimed warm-pool members by template id (also in every heartbeat)."""
    pool = app[app_keys.DRONE].pool
    return {} if pool is None else pool.available()


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
"""How `_connect` answered, for the connect metric: `replica`, `forwarded`, `offline`, or the control plane's
error code."""


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
    sync_loop, control = app[app_keys.SYNC_LOOP], app[app_keys.CONTROL]
    probing = not sync_loop.reachable
    if probing and not control.probe_worthwhile():
        return await _offline(request, body, caller)
    trusted = set(caller.scopes) & {Scope.ADMIN, Scope.EDGE}
    forwarded = body.model_dump(mode="json", exclude_none=True)
    if not trusted:
        forwarded.pop("client_ip", None)  # only trusted callers may speak for a user's address
    headers = {
        "X-Forwarded-For": request.remote or "",
        "X-Meridian-Arrival-Region": app[app_keys.SETTINGS].region,
        "X-Meridian-Caller": caller.token_id,
    }
    try:
        with control_call(app, "POST /v1/connect", headers):
            status_code, payload, retry_after = await control.connect(forwarded, headers, probing=probing)
    except ControlPlaneUnreachable:
        return await _offline(request, body, caller)
    if probing:
        if status_code >= 500:  # it answers but cannot serve (its database is down): still offline
            return await _offline(request, body, caller)
        sync_loop.nudge()  # the control plane answered before sync noticed it was back
    if isinstance(payload, dict) and "assignment" in payload:
        # The fast route (never passed on: it holds the backend's secret): start it here at once.
        app[app_keys.DRONE].assigned(payload.pop("assignment"))
    if status_code == 200 and isinstance(payload, dict):
        payload = add_routing_urls(app[app_keys.SETTINGS], payload)
    if status_code >= 400 and isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        request[CONNECT_OUTCOME] = str(payload["error"].get("code", status_code))[:64]
    passed_on = {"Retry-After": retry_after} if retry_after is not None and status_code in (429, 503) else None
    return web.json_response(payload, status=status_code, headers=passed_on)


async def _offline(request: web.Request, body: ConnectRequest, caller: ApiTokenState) -> web.Response:
    """The control plane is unreachable: answer from what this edge knows, or spawn here."""
    answer = await request.app[app_keys.OFFLINE].connect(body, caller)
    request[CONNECT_OUTCOME] = "offline"
    return web.json_response(add_routing_urls(request.app[app_keys.SETTINGS], answer))


def _from_replica(request: web.Request, body: ConnectRequest) -> dict[str, Any] | None:
    """The answer for a key whose ready backend this edge knows (its replica, or its own drone: a
    backend ready here before the replica heard of it), without the control plane."""
    app = request.app
    replica = app[app_keys.REPLICA]
    assert body.key is not None
    backend = replica.live_backend_for_key(body.key)
    if backend is None or backend.status is not BackendStatus.READY:
        local = app[app_keys.DRONE].live_for_key(body.key)
        if local is None or local.status is not BackendStatus.READY or local.state is None:
            return None
        backend = local.state
    if backend.template_name != body.template:
        return None
    settings = app[app_keys.SETTINGS]
    return connect_answer(
        replica,
        backend,
        BackendStatus.READY,
        user=body.user,
        spawned=False,
        reason="existing",
        control_url=app[app_keys.CONTROL].base_url,
        fallback_edge_url=settings.effective_public_url(settings.port),
    )
