"""How a backend is addressed on an edge, shared by the control plane's `connect` answer, the
executors (the backend's `MERIDIAN_BASE_PATH`) and the edge's proxy."""

from __future__ import annotations

from urllib.parse import urlsplit


def base_path(backend_id: str) -> str:
    """The backend's stable path prefix under path routing: the same for every token and every
    edge, so an app can be configured with it (e.g. JupyterLab's `--ServerApp.base_url`)."""
    return f"/{backend_id}"


def subdomain_url(edge_url: str, edge_domain: str | None, backend_id: str, token: str) -> str | None:
    """The backend's URL under subdomain routing (`<backend-id>.<edge-domain>`, the scheme and port
    of the edge's public URL), whose first visit hands the token over to a host-only cookie; None
    when the edge has no edge domain."""
    if not edge_domain:
        return None
    public = urlsplit(edge_url)
    port = f":{public.port}" if public.port else ""
    return f"{public.scheme}://{backend_id}.{edge_domain.lower().strip('.')}{port}/{token}/"
