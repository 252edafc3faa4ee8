"""What the control plane's request handlers share, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from control.notifier import VersionNotifier
from control.placement import Placer
from control.services.auth import TokenCache
from control.services.connect import FleetViewCache, KeyFlights
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
    fleet: FleetViewCache = field(default_factory=FleetViewCache)
    flights: KeyFlights = field(default_factory=KeyFlights)
