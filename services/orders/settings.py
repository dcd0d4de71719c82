"""Settings of the orders service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from core.bus.transport import Transport
from core.settings import BaseServiceSettings, database_url

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """``ORDERS_DATABASE_URL``, ``ORDERS_PORT``, ``PRODUCTS_URL``, ``ORDERS_BUS_QUEUE``,
    ``ORDERS_BUS_EXCHANGE``, ``ORDERS_RESERVATION_TIMEOUT``, ``ORDERS_PAYMENT_TIMEOUT``,
    ``ORDERS_SAGA_POLL_INTERVAL``, ``ORDERS_SAGA_LEASE``, ``ORDERS_CACHE_ENABLED``,
    ``ORDERS_ALLOW_SIMULATED_PAYMENTS``, ``HEALTH_SAGA_BACKLOG_WARN``, ``HEALTH_SAGA_AGE_WARN``.

    The saga's deadlines are seconds: a stock reservation not answered within
    ``reservation_timeout``, or a payment not answered within ``payment_timeout``, fails the
    order and compensates. ``saga_poll_interval`` is how often the orchestrator looks for steps
    that are due (deadlines passed, sagas left behind by a stopped instance); an instance holds
    a step it runs by a lease of ``saga_lease`` seconds, renewed at every poll, after which a
    dead instance's step is resumed elsewhere (keep it above the poll interval). ``bus_queue``
    names the durable queue the service consumes ``inventory.*`` from; ``bus_exchange`` the
    topic exchange (a test gives itself its own).

    The only payment provider is the simulated one, where the public token ``tok_visa`` pays for
    anything: with ``AIOSHOP_ENV=production`` the service refuses to start with it (see
    ``services.orders.payment.check_provider``) unless ``ORDERS_ALLOW_SIMULATED_PAYMENTS=true``
    says that this system takes no real money (a staging or demo system in production mode).
    Commands that do not serve (migrations, read-model rebuilds) are not refused.
    """

    # More than core's 10: the consumer runs up to 32 deliveries at once (the bus prefetch),
    # each holding a connection for its transaction, beside the HTTP requests. 20 keeps the
    # pool wait under a few ms at full load (40 halved it again) and leaves room in PostgreSQL's
    # default 100 connections for replicas: DB_POOL_MAX_SIZE sets it per instance.
    db_pool_max_size: int = Field(default=20, ge=1)
    port: int = Field(
        default=8003, ge=0, le=65535, validation_alias=AliasChoices("ORDERS_PORT", "port")
    )
    database_url: str = Field(
        default=database_url("aioshop_orders"),
        validation_alias=AliasChoices("ORDERS_DATABASE_URL", "database_url"),
    )
    products_url: str = Field(
        default="http://127.0.0.1:8002",
        validation_alias=AliasChoices("PRODUCTS_URL", "products_url"),
    )
    products_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        validation_alias=AliasChoices("ORDERS_PRODUCTS_TIMEOUT", "products_timeout"),
    )
    bus_queue: str = Field(
        default="orders",
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        validation_alias=AliasChoices("ORDERS_BUS_QUEUE", "bus_queue"),
    )
    bus_exchange: str = Field(
        default=Transport.exchange,
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        validation_alias=AliasChoices("ORDERS_BUS_EXCHANGE", "BUS_EXCHANGE", "bus_exchange"),
    )
    reservation_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("ORDERS_RESERVATION_TIMEOUT", "reservation_timeout"),
    )
    payment_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("ORDERS_PAYMENT_TIMEOUT", "payment_timeout"),
    )
    saga_poll_interval: float = Field(
        default=0.5,
        gt=0,
        le=60,
        validation_alias=AliasChoices("ORDERS_SAGA_POLL_INTERVAL", "saga_poll_interval"),
    )
    saga_lease: float = Field(
        default=5.0,
        gt=0,
        le=600,
        validation_alias=AliasChoices("ORDERS_SAGA_LEASE", "saga_lease"),
    )
    cache_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("ORDERS_CACHE_ENABLED", "cache_enabled")
    )
    # /readyz details (services.orders.health): unfinished sagas, and the age of the oldest.
    health_saga_backlog_warn: int = Field(
        default=100,
        ge=0,
        validation_alias=AliasChoices("HEALTH_SAGA_BACKLOG_WARN", "health_saga_backlog_warn"),
    )
    health_saga_age_warn: float = Field(
        default=600.0,
        ge=0,
        validation_alias=AliasChoices("HEALTH_SAGA_AGE_WARN", "health_saga_age_warn"),
    )
    allow_simulated_payments: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "ORDERS_ALLOW_SIMULATED_PAYMENTS", "allow_simulated_payments"
        ),
    )
