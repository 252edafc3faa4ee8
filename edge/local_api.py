"""The edge's own endpoints: health, status, and connect (answered from the replica when it can)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from edge import keys as app_keys
from edge.access import api_caller
from edge.offline_connect import connect_answer
from sync.errors import BadRequest, ControlPlaneUnreachable, PayloadTooLarge
from sync.models import BackendStatus, ConnectRequest, Scope

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
    app = request.app
    replica = app[app_keys.REPLICA]
    caller = api_caller(replica, request.headers.get("Authorization"), Scope.CLIENT, Scope.EDGE)
    body = await _read_connect(request)
    offline = app[app_keys.OFFLINE]
    if body.key is not None:
        answer = _from_replica(request, body)
        if answer is not None:
            return web.json_response(answer)
    if not app[app_keys.SYNC_LOOP].reachable:
        return web.json_response(await offline.connect(body, caller))
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
        status_code, payload, retry_after = await app[app_keys.CONTROL].connect(forwarded, headers)
    except ControlPlaneUnreachable:
        return web.json_response(await offline.connect(body, caller))
    answer_headers = {"Retry-After": retry_after} if retry_after is not None and status_code in (429, 503) else None
    return web.json_response(payload, status=status_code, headers=answer_headers)


def _from_replica(request: web.Request, body: ConnectRequest) -> dict[str, Any] | None:
    """The answer for a key whose ready backend the replica knows, without the control plane."""
    app = request.app
    replica = app[app_keys.REPLICA]
    assert body.key is not None
    backend = replica.live_backend_for_key(body.key)
    if backend is None or backend.status is not BackendStatus.READY or backend.template_name != body.template:
        local = app[app_keys.DRONE].live_for_key(body.key)
        if local is None or local.status is not BackendStatus.READY or local.state is None:
            return None
        if local.state.template_name != body.template:
            return None
        backend = local.state  # the edge's own truth: ready here, whatever the replica says yet
    settings = app[app_keys.SETTINGS]
    return connect_answer(
        replica,
        backend,
        BackendStatus.READY,
        user=body.user,
        spawned=False,
        reason="existing",
        control_url=settings.control_url,
        fallback_edge_url=settings.effective_public_url(settings.port),
    )
