"""The URLs an edge adds to a `connect` answer for browsers: the backend's stable base path and,
when the edge has an edge domain, its subdomain URL (which hands the token over once)."""

from __future__ import annotations

from typing import Any

from edge.settings import EdgeSettings
from sync.routing import base_path, subdomain_url


def add_routing_urls(settings: EdgeSettings, answer: dict[str, Any]) -> dict[str, Any]:
    """The answer with `base_path` and `subdomain_url` (a successful answer only)."""
    backend_id, token = answer.get("backend_id"), answer.get("token")
    if isinstance(backend_id, str) and isinstance(token, str):
        answer["base_path"] = base_path(backend_id)
        if not answer.get("subdomain_url"):  # the control plane's, when it answered, names the backend's node's domain
            edge_url = answer.get("edge_url") or settings.effective_public_url(settings.port)
            answer["subdomain_url"] = subdomain_url(str(edge_url), settings.edge_domain, backend_id, token)
    return answer
