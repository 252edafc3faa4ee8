"""The edge's calls to the control plane besides sync: heartbeats, status reports, forwarded connects."""

from __future__ import annotations

from typing import Any

import aiohttp

from sync.discovery import ControlEndpoints, endpoints_for, with_failover
from sync.errors import ControlPlaneUnreachable, MeridianError, error_from_body
from sync.models import HeartbeatIn, HeartbeatOut, StatusReport

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)


class ControlClient:
    """`base_url` is a URL or endpoints shared with the sync client (`dns+srv://` names several
    control planes): a call that reaches none of them fails over to the next at once."""

    def __init__(self, base_url: str | ControlEndpoints, token: str, session: aiohttp.ClientSession) -> None:
        self._endpoints = endpoints_for(base_url) if isinstance(base_url, str) else base_url
        self._auth = {"Authorization": f"Bearer {token}"}
        self._session = session

    @property
    def base_url(self) -> str:
        """The control plane preferred now (the one that answered last)."""
        return self._endpoints.preferred

    async def _post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, *, idempotent: bool = True
    ) -> tuple[int, Any]:
        async def once(base_url: str) -> tuple[int, Any]:
            return await self._post_to(base_url + path, body, headers)

        return await with_failover(self._endpoints, once, idempotent=idempotent)

    async def _post_to(self, url: str, body: Any, headers: dict[str, str] | None) -> tuple[int, Any]:
        try:
            async with self._session.post(
                url, json=body, headers={**self._auth, **(headers or {})}, timeout=REQUEST_TIMEOUT
            ) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                return resp.status, payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ControlPlaneUnreachable(f"control plane unreachable: {exc}") from exc

    async def heartbeat(self, hb: HeartbeatIn) -> HeartbeatOut:
        status, body = await self._post("/v1/nodes/heartbeat", hb.model_dump(mode="json"))
        if status != 200:
            raise error_from_body(status, body)
        return HeartbeatOut.model_validate(body)

    async def report(self, report: StatusReport) -> None:
        status, body = await self._post(f"/v1/backends/{report.id}/status", report.model_dump(mode="json"))
        if status not in (200, 404):  # 404: the control plane forgot it; the heartbeat says so too
            raise error_from_body(status, body)

    async def connect(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        """Forward a connect; returns the control plane's status and body as they are."""
        # A keyed connect is setdefault: sending it again elsewhere cannot make a second backend.
        return await self._post("/v1/connect", body, headers, idempotent=body.get("key") is not None)


__all__ = ["ControlClient", "MeridianError"]
