"""A small synchronous HTTP client for the CLI, mapping error bodies back to typed errors."""

from __future__ import annotations

from typing import Any

import httpx

from sync.errors import ControlPlaneUnreachable, MeridianError, error_from_body


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ControlPlaneUnreachable(f"cannot reach {self._http.base_url}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            retry = resp.headers.get("retry-after")
            raise error_from_body(resp.status_code, body, float(retry) if retry and retry.isdigit() else None)
        return body


__all__ = ["ApiClient", "MeridianError"]
