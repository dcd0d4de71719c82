"""Typed keys for the state core keeps on an ``aiohttp.web.Application`` and on requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from core.auth.authenticator import Authenticator
from core.auth.tokens import Principal
from core.settings import BaseServiceSettings

if TYPE_CHECKING:
    # Neither bus module imports core.keys, directly or not (core.bus.outbox spells out
    # core.db's Connection rather than importing it): no import cycle.
    from core.bus.app import BusCompanion
    from core.bus.bus import Bus
    from core.bus.outbox import Outbox
    from core.bus.relay import OutboxRelay
    from core.cache.cache import Cache
    from core.forwarded import TrustedProxies
    from core.handlers import RouteDef
    from core.health import HealthChecks
    from core.metrics import Metrics

__all__ = [
    "AUTHENTICATOR",
    "BUS",
    "BUS_COMPANIONS",
    "CACHE",
    "DB_POOL",
    "HEALTH",
    "METRICS",
    "OUTBOX",
    "OUTBOX_RELAY",
    "PRINCIPAL",
    "PROXIES",
    "REDIS",
    "ROUTES",
    "SERVICE_NAME",
    "SETTINGS",
]

SERVICE_NAME = web.AppKey("service_name", str)
SETTINGS = web.AppKey("settings", BaseServiceSettings)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
HEALTH: web.AppKey[HealthChecks] = web.AppKey("health")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ROUTES: web.AppKey[list[RouteDef]] = web.AppKey("routes")
BUS: web.AppKey[Bus] = web.AppKey("bus")
OUTBOX: web.AppKey[Outbox] = web.AppKey("outbox")
OUTBOX_RELAY: web.AppKey[OutboxRelay] = web.AppKey("outbox_relay")
BUS_COMPANIONS: web.AppKey[list[BusCompanion]] = web.AppKey("bus_companions")
CACHE: web.AppKey[Cache] = web.AppKey("cache")
PROXIES: web.AppKey[TrustedProxies] = web.AppKey("trusted_proxies")

PRINCIPAL = web.RequestKey("principal", Principal)
