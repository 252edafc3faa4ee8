"""Typed application keys of the edge's aiohttp app."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from edge.activity import Activity
from edge.control_client import ControlClient
from edge.drain import DrainState, ExitPlan
from edge.drone import Drone
from edge.executors.router import Executors
from edge.journal import Journal
from edge.journal_replay import JournalReplayer
from edge.node_token import NodeToken
from edge.offline_connect import OfflineConnect
from edge.proxy import Proxy
from edge.replica import Replica
from edge.settings import EdgeSettings
from sync.client import SyncClient
from sync.loop import SyncLoop

SETTINGS = web.AppKey("settings", EdgeSettings)
NODE_ID = web.AppKey("node_id", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
REPLICA = web.AppKey("replica", Replica)
CONTROL = web.AppKey("control", ControlClient)
ACTIVITY = web.AppKey("activity", Activity)
DRONE = web.AppKey("drone", Drone)
EXECUTORS = web.AppKey("executors", Executors)
SYNC_LOOP = web.AppKey("sync_loop", SyncLoop)
PROXY = web.AppKey("proxy", Proxy)
DRAIN = web.AppKey("drain", DrainState)
EXIT_PLAN = web.AppKey("exit_plan", ExitPlan)
JOURNAL = web.AppKey("journal", Journal)
OFFLINE = web.AppKey("offline", OfflineConnect)
REPLAYER = web.AppKey("replayer", JournalReplayer)
NODE_TOKEN = web.AppKey("node_token", NodeToken)
SYNC_CLIENT = web.AppKey("sync_client", SyncClient)
