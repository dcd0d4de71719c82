"""Typed keys of the state every core app holds, whose types depend on nothing of core's own
wiring: the service's name and settings, its authenticator, pool and Redis client, and the
request's principal.

The keys of core's components live beside the class they hold (``core.bus.BUS``,
``core.cache.CACHE``, ``core.health.HEALTH``, ``core.metrics.METRICS``, ``core.handlers.ROUTES``,
``core.forwarded.PROXIES``...), so that no module has to import the things that import it;
``core`` exports them all.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from core.auth.authenticator import Authenticator
from core.auth.tokens import Principal
from core.settings import BaseServiceSettings

__all__ = [
    "AUTHENTICATOR",
    "DB_POOL",
    "PRINCIPAL",
    "REDIS",
    "SERVICE_NAME",
    "SETTINGS",
]

SERVICE_NAME = web.AppKey("service_name", str)
SETTINGS = web.AppKey("settings", BaseServiceSettings)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)

PRINCIPAL = web.RequestKey("principal", Principal)
