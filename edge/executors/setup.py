"""Which executors an edge runs, from its settings: always ``process``; ``nomad`` when a Nomad
address is set (``--nomad-addr`` / ``NOMAD_ADDR``, with ``NOMAD_TOKEN``, ``NOMAD_NAMESPACE``,
``NOMAD_REGION``)."""

from __future__ import annotations

from typing import Any

from edge.settings import EdgeSettings

from .base import BaseExecutor, ExitCallback
from .logs import LogPolicy
from .nomad import NomadExecutor
from .process import ProcessExecutor
from .router import Executors


def log_policy(settings: EdgeSettings) -> LogPolicy:
    return LogPolicy(
        directory=settings.data_dir / "logs",
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
        keep_s=settings.log_keep_s,
    )


def build_executors(settings: EdgeSettings, on_exit: ExitCallback) -> Executors:
    policy = log_policy(settings)
    executors: dict[str, BaseExecutor[Any]] = {
        "process": ProcessExecutor(on_exit, logs=policy, grace_s=settings.stop_grace_s),
    }
    if settings.nomad_addr:
        executors["nomad"] = NomadExecutor(
            on_exit,
            address=settings.nomad_addr.rstrip("/"),
            token=settings.nomad_token.get_secret_value() if settings.nomad_token else None,
            namespace=settings.nomad_namespace,
            nomad_region=settings.nomad_region,
            grace_s=settings.stop_grace_s,
            log_max_files=policy.backups + 1,
            log_max_file_mb=max(1, settings.log_max_bytes >> 20),
        )
    return Executors(executors)
