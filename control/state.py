"""What the control plane's request handlers share, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from control.notifier import VersionNotifier
from control.placement import Placer
from control.services.auth import TokenCache
from control.services.connect import ConnectDeps
from control.services.signing import Keyring
from control.settings import ControlSettings


@dataclass
class ControlState:
    settings: ControlSettings
    pool: asyncpg.Pool
    notifier: VersionNotifier
    keyring: Keyring
    placer: Placer
    tokens: TokenCache = field(default_factory=TokenCache)
    connect: ConnectDeps = field(init=False)

    def __post_init__(self) -> None:
        self.connect = ConnectDeps(pool=self.pool, placer=self.placer, keyring=self.keyring)
