"""Wiring of the users service: settings -> resources -> routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from core import DB_POOL, METRICS, OUTBOX, REDIS, create_app, postgres_ctx, redis_ctx, token_codec
from core.app import CleanupCtx, auth_ctx
from core.auth import PasswordHasher, RevocationStore
from core.bus import Bus, Transport, bus_ctx, bus_workers_ctx
from core.snapshot import add_figures
from services.users.api import router
from services.users.events import UserRegistered, UserRolesChanged
from services.users.keys import USERS_SERVICE
from services.users.metrics import UsersMetrics
from services.users.repository import UsersRepository
from services.users.service import UsersService
from services.users.settings import Settings
from services.users.throttle import LoginThrottle

__all__ = ["create_users_app"]

log = logging.getLogger("services.users")


def _service_ctx(settings: Settings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        hasher = PasswordHasher(rounds=settings.bcrypt_rounds)
        repository = UsersRepository(app[DB_POOL])
        service = UsersService(
            repository,
            hasher=hasher,
            codec=token_codec(settings, signing=True),
            revocations=RevocationStore(
                app[REDIS], namespace=settings.redis_namespace, access_ttl=settings.access_token_ttl
            ),
            outbox=app[OUTBOX],
            throttle=LoginThrottle(
                app[REDIS],
                namespace=settings.redis_namespace,
                free_attempts=settings.login_free_attempts,
                account_free_attempts=settings.login_account_free_attempts,
                base_delay=settings.login_delay_base,
                max_delay=settings.login_delay_max,
            ),
            metrics=UsersMetrics(app[METRICS].registry),
        )
        app[USERS_SERVICE] = service

        async def figures(app: web.Application) -> dict[str, int]:
            return {"registrations": await repository.count_users()}

        add_figures(app, figures, every=2.0)
        if settings.admin_email and settings.admin_password:
            admin = await service.ensure_admin_at_startup(
                email=settings.admin_email, password=settings.admin_password.get_secret_value()
            )
            if admin is not None:
                log.info("admin account %s is ready", admin.email)
        try:
            yield
        finally:
            hasher.close()

    return ctx


def _declare_events(app: web.Application, bus: Bus) -> None:
    bus.declare_publishes(UserRegistered, UserRolesChanged)


def create_users_app(
    settings: Settings | None = None, *, transport: Transport | None = None
) -> web.Application:
    """The users service application (``transport``: share a bus transport, e.g. in memory)."""
    settings = settings or Settings()
    return create_app(
        "users",
        settings,
        routers=[router],
        resources=[
            redis_ctx(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                pool_timeout=settings.redis_pool_timeout,
            ),
            postgres_ctx(
                settings.database_url,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                statement_timeout=settings.db_statement_timeout,
                acquire_timeout=settings.db_acquire_timeout,
            ),
            auth_ctx(settings),
            bus_ctx(settings, setup=_declare_events, transport=transport),
            _service_ctx(settings),
            bus_workers_ctx(settings.database_url),
        ],
        title="aioshop users",
        description="Accounts, sessions and roles.",
    )
