"""The edge's open-file limit. Every proxied connection holds two descriptors (the client's and
the upstream's), so an edge capped at `max_client_connections` needs about twice that many; the
soft limit is raised to the hard one at start (what nginx's `worker_rlimit_nofile` does), and a
hard limit too low for the cap is said once in the log rather than found as EMFILE under load."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

DESCRIPTORS_PER_CONNECTION = 2
SPARE_DESCRIPTORS = 256
"""Replica, journal, logs, the control-plane connections, listening sockets."""


def needed_for(max_connections: int) -> int:
    return max_connections * DESCRIPTORS_PER_CONNECTION + SPARE_DESCRIPTORS


def raise_soft_limit(max_connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the soft limit now. Warns when it cannot
    hold `max_connections` proxied connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = needed_for(max_connections) if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed_for(max_connections):
        log.warning(
            "open-file limit %d holds about %d proxied connections, fewer than max_client_connections=%d "
            "(raise the hard limit, e.g. LimitNOFILE=%d, or lower the cap)",
            soft,
            (soft - SPARE_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION,
            max_connections,
            needed_for(max_connections),
        )
    return soft
