"""The edge's calls to the control plane besides sync: heartbeats, status reports, forwarded connects."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from sync.discovery import ControlEndpoints, endpoints_for, with_failover
from sync.errors import ControlPlaneUnreachable, MeridianError, error_from_body
from sync.models import HeartbeatIn, HeartbeatOut, StatusReport
from sync.offline import ReplayIn, ReplayOut
from sync.timing import CONTROL_PROBE_CONNECT_S, CONTROL_PROBE_QUIET_S

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=3)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=CONTROL_PROBE_CONNECT_S)


class ControlClient:
    """`base_url` is a URL or endpoints shared with the sync client (`dns+srv://` names several
    control planes): a call that reaches none of them fails over to the next at once."""

    def __init__(self, base_url: str | ControlEndpoints, token: str, session: aiohttp.ClientSession) -> None:
        self._endpoints = endpoints_for(base_url) if isinstance(base_url, str) else base_url
        self._auth = {"Authorization": f"Bearer {token}"}
        self._session = session
        self._timed_out_at = -float("inf")  # monotonic time of the last call that timed out

    def use_token(self, token: str) -> None:
        """Switch to another token (the node's own, once enrolled)."""
        self._auth = {"Authorization": f"Bearer {token}"}

    def probe_worthwhile(self) -> bool:
        """Whether a call is worth trying while sync counts the control plane as unreachable: a
        refused connection fails at once, so only a timeout in the last few moments says to skip it."""
        return time.monotonic() - self._timed_out_at >= CONTROL_PROBE_QUIET_S

    @property
    def base_url(self) -> str:
        """The control plane preferred now (the one that answered last)."""
        return self._endpoints.preferred

    async def _post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, *, idempotent: bool = True
    ) -> tuple[int, Any]:
        status, payload, _ = await self._post_answer(path, body, headers, idempotent=idempotent)
        return status, payload

    async def _post_answer(
        self,
        path: str,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        idempotent: bool = True,
        limits: aiohttp.ClientTimeout = REQUEST_TIMEOUT,
    ) -> tuple[int, Any, str | None]:
        async def once(base_url: str) -> tuple[int, Any, str | None]:
            return await self._post_to(base_url + path, body, headers, limits)

        return await with_failover(self._endpoints, once, idempotent=idempotent)

    async def _post_to(
        self, url: str, body: Any, headers: dict[str, str] | None, limits: aiohttp.ClientTimeout
    ) -> tuple[int, Any, str | None]:
        try:
            async with self._session.post(
                url, json=body, headers={**self._auth, **(headers or {})}, timeout=limits
            ) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                retry_after = resp.headers.get("Retry-After")
                if retry_after is not None and not retry_after.isdigit():
                    retry_after = None  # only delta-seconds is passed on
                return resp.status, payload, retry_after
        except (aiohttp.ClientError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors too
                self._timed_out_at = time.monotonic()
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

    async def connect(
        self, body: dict[str, Any], headers: dict[str, str], *, probing: bool = False
    ) -> tuple[int, Any, str | None]:
        """Forward a connect; returns the control plane's status, body and Retry-After as they are.
        `probing`: sync counts the control plane as unreachable, so give up on the dial sooner."""
        # A keyed connect is setdefault: sending it again elsewhere cannot make a second backend.
        return await self._post_answer(
            "/v1/connect",
            body,
            headers,
            idempotent=body.get("key") is not None,
            limits=PROBE_TIMEOUT if probing else REQUEST_TIMEOUT,
        )

    async def replay(self, node_id: str, replay: ReplayIn) -> ReplayOut:
        """Hand the journal's pending entries to the control plane (POST /v1/nodes/{id}/journal)."""
        status, body = await self._post(f"/v1/nodes/{node_id}/journal", replay.model_dump(mode="json"))
        if status != 200:
            raise error_from_body(status, body)
        return ReplayOut.model_validate(body)


__all__ = ["ControlClient", "MeridianError"]
