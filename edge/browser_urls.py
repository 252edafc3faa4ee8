"""The URLs an edge adds to a `connect` answer for browsers: the backend's stable base path and,
when the edge has an edge domain, its subdomain URL (which hands the token over once)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from edge.settings import EdgeSettings
from sync.routing import base_path


def subdomain_url(settings: EdgeSettings, backend_id: str, token: str) -> str | None:
    if not settings.edge_domain:
        return None
    public = urlsplit(settings.effective_public_url(settings.port))
    port = f":{public.port}" if public.port else ""
    return f"{public.scheme}://{backend_id}.{settings.edge_domain.lower().strip('.')}{port}/{token}/"


def add_routing_urls(settings: EdgeSettings, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with `base_path` and `subdomain_url` (a successful answer only)."""
    backend_id, token = answer.get("backend_id"), answer.get("token")
    if isinstance(backend_id, str) and isinstance(token, str):
        answer["base_path"] = base_path(backend_id)
        answer["subdomain_url"] = subdomain_url(settings, backend_id, token)
    return answer
