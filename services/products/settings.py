"""Settings of the products service."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from core.settings import BaseServiceSettings, database_url

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """``PRODUCTS_DATABASE_URL``, ``PRODUCTS_PORT``, ``PRODUCTS_CACHE_ENABLED``,
    ``PRODUCTS_BUS_QUEUE``, ``PRODUCTS_CACHE_WARMUP``, ``PRODUCTS_CACHE_WARMUP_PRODUCTS``,
    ``PRODUCTS_CACHE_WARMUP_TIMEOUT``.

    ``cache_enabled=False`` serves every read from PostgreSQL (the benchmark's uncached figure);
    ``cache_warmup`` warms the hot set (categories, first listing pages, the
    ``cache_warmup_products`` most reserved products) before ``/readyz`` passes, for at most
    ``cache_warmup_timeout`` seconds (``services.products.service.warming``); ``bus_queue``
    names the durable queue the service consumes ``order.*`` from (instances of one
    deployment share it; a test gives itself its own).
    """

    # More than core's 10: the consumer runs up to 32 deliveries at once (the bus prefetch),
    # each holding a connection for its transaction, beside the HTTP requests. 20 keeps the
    # pool wait under a few ms at full load (40 halved it again) and leaves room in PostgreSQL's
    # default 100 connections for replicas: DB_POOL_MAX_SIZE sets it per instance.
    db_pool_max_size: int = Field(default=20, ge=1)
    port: int = Field(
        default=8002, ge=0, le=65535, validation_alias=AliasChoices("PRODUCTS_PORT", "port")
    )
    database_url: str = Field(
        default=database_url("aioshop_products"),
        validation_alias=AliasChoices("PRODUCTS_DATABASE_URL", "database_url"),
    )
    cache_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("PRODUCTS_CACHE_ENABLED", "cache_enabled")
    )
    bus_queue: str = Field(
        default="products",
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        validation_alias=AliasChoices("PRODUCTS_BUS_QUEUE", "bus_queue"),
    )
    cache_warmup: bool = Field(
        default=True, validation_alias=AliasChoices("PRODUCTS_CACHE_WARMUP", "cache_warmup")
    )
    cache_warmup_products: int = Field(
        default=200,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("PRODUCTS_CACHE_WARMUP_PRODUCTS", "cache_warmup_products"),
    )
    cache_warmup_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        validation_alias=AliasChoices("PRODUCTS_CACHE_WARMUP_TIMEOUT", "cache_warmup_timeout"),
    )
