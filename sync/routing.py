"""How a backend is addressed on an edge, shared by the control plane's `connect` answer, the
executors (the backend's `MERIDIAN_BASE_PATH`) and the edge's proxy."""

from __future__ import annotations


def base_path(backend_id: str) -> str:
    """The backend's stable path prefix under path routing: the same for every token and every
    edge, so an app can be configured with it (e.g. JupyterLab's `--ServerApp.base_url`)."""
    return f"/{backend_id}"
