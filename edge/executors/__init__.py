"""How an edge node runs backends: local processes (default) or Nomad jobs.

See :mod:`edge.executors.base` for the interface, its exit-reporting contract and the base class
(:class:`BaseExecutor`, one :class:`BackendRecord` per backend) both executors are built on.
"""

from .base import (
    BackendExit,
    BackendRecord,
    BaseExecutor,
    Executor,
    ExecutorError,
    ExecutorStatus,
    ExecutorUnavailable,
    ExitCallback,
    PoolTag,
    SpawnRequest,
    StartFailed,
    StartRefused,
)
from .process import ProcessExecutor
from .readiness import NotReady, probe_ready

__all__ = [
    "BackendExit",
    "BackendRecord",
    "BaseExecutor",
    "Executor",
    "ExecutorError",
    "ExecutorStatus",
    "ExecutorUnavailable",
    "ExitCallback",
    "NotReady",
    "PoolTag",
    "ProcessExecutor",
    "SpawnRequest",
    "StartFailed",
    "StartRefused",
    "probe_ready",
]
