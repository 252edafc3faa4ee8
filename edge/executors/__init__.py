"""How an edge node runs backends: local processes (default) or Nomad jobs.

See :mod:`edge.executors.base` for the interface and its exit-reporting contract.
"""

from .base import (
    BackendExit,
    Executor,
    ExecutorError,
    ExecutorStatus,
    ExecutorUnavailable,
    ExitCallback,
    SpawnRequest,
    StartFailed,
    StartRefused,
)
from .process import ProcessExecutor
from .readiness import NotReady, probe_ready

__all__ = [
    "BackendExit",
    "Executor",
    "ExecutorError",
    "ExecutorStatus",
    "ExecutorUnavailable",
    "ExitCallback",
    "NotReady",
    "ProcessExecutor",
    "SpawnRequest",
    "StartFailed",
    "StartRefused",
    "probe_ready",
]
