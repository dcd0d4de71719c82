"""core: the small framework aioshop's services are built on.

Handlers with pydantic validation and OpenAPI, a middleware stack, JWT auth, asyncpg and Redis
resources, health and metrics, and pytest fixtures (``core.testing``).
"""

from core.app import auth_ctx, create_app, token_codec
from core.auth import Principal
from core.bus.app import BUS, OUTBOX
from core.db import postgres_ctx, transaction
from core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from core.handlers import Body, Header, Path, Query, Router
from core.health import HEALTH
from core.keys import AUTHENTICATOR, DB_POOL, PRINCIPAL, REDIS, SETTINGS
from core.metrics import METRICS
from core.redis import redis_ctx
from core.settings import BaseServiceSettings

__all__ = [
    "AUTHENTICATOR",
    "BUS",
    "DB_POOL",
    "HEALTH",
    "METRICS",
    "OUTBOX",
    "PRINCIPAL",
    "REDIS",
    "SETTINGS",
    "BadRequest",
    "BaseServiceSettings",
    "Body",
    "Conflict",
    "Forbidden",
    "Header",
    "NotFound",
    "Path",
    "Principal",
    "ProblemError",
    "Query",
    "Router",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationFailed",
    "auth_ctx",
    "create_app",
    "postgres_ctx",
    "redis_ctx",
    "token_codec",
    "transaction",
]
