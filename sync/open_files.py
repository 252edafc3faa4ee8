"""A process's open-file limit, raised at start by the control plane and every edge.

Every long-polling edge holds one socket at the control plane, and every proxied connection holds
two descriptors at an edge (the client's and the upstream's); the usual soft default (1,024) would
refuse connections long before either is busy. The soft limit is raised to the hard one (what
nginx's `worker_rlimit_nofile` does), and a hard limit too low for what the process is meant to
hold is said once in the log rather than found as EMFILE under load."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

DESCRIPTORS_PER_CONNECTION = 2
SPARE_DESCRIPTORS = 256
"""Replica, journal, logs, the control-plane connections, listening sockets."""


def needed_for(max_connections: int) -> int:
    """Descriptors an edge needs to proxy `max_connections` connections at once."""
    return max_connections * DESCRIPTORS_PER_CONNECTION + SPARE_DESCRIPTORS


def raise_soft_limit(needed: int, what: str) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (to `needed` when the hard one is unlimited)
    and return the soft limit now; warn when it is below `needed`, naming `what` needs them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. a hard limit the kernel caps lower than it says
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is below the %d that %s needs (raise the hard limit, e.g. LimitNOFILE)",
            soft,
            needed,
            what,
        )
    return soft
