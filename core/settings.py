"""Settings from the environment (pydantic-settings), one class per service sharing this base.

Every default points at a local server on its standard port so that a developer's machine works
with no configuration. The JWT key pair default is a development key (see ``core.auth.devkeys``) and
is refused when ``AIOSHOP_ENV=production``.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY

__all__ = ["BaseServiceSettings", "database_url"]

_LOCAL_PG = "postgresql://postgres@127.0.0.1:5432"


def database_url(name: str) -> str:
    """The development default URL of the database called ``name`` on the local server."""
    return f"{_LOCAL_PG}/{name}"


class BaseServiceSettings(BaseSettings):
    """Settings every service shares. Environment variables are the upper-cased field names."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    env: Literal["development", "test", "production"] = Field(
        default="development", validation_alias=AliasChoices("AIOSHOP_ENV", "env")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = Field(default="aioshop", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    bus_transport: Literal["amqp", "memory"] = "amqp"
    bus_publish_timeout: float = Field(default=5.0, gt=0, le=60)
    # Seconds between the metrics.snapshot events of an instance (the dashboard's feed); 0: none.
    metrics_snapshot_interval: float = Field(default=1.0, ge=0, le=3600)
    memcached_url: str = "memcached://127.0.0.1:11211"
    mongodb_url: str | None = None
    cache_tiers: tuple[Literal["memory", "redis", "memcached"], ...] = (
        "memory",
        "redis",
        "memcached",
    )
    cache_l1_max_entries: int = Field(default=10_000, ge=1)
    cache_l1_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_l1_ttl: float = Field(default=1.0, gt=0, le=3600)
    cache_remote_timeout: float = Field(default=0.1, gt=0, le=5)
    cache_breaker_cooldown: float = Field(default=5.0, gt=0, le=300)

    jwt_private_key: SecretStr | None = SecretStr(DEV_PRIVATE_KEY)
    jwt_public_key: str = DEV_PUBLIC_KEY
    jwt_algorithm: Literal["EdDSA", "ES256", "RS256"] = "EdDSA"
    jwt_issuer: str = "aioshop"
    access_token_ttl: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl: int = Field(default=14 * 86_400, ge=300, le=90 * 86_400)

    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    readiness_timeout: float = Field(default=1.0, gt=0, le=30)
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _no_dev_keys_in_production(self) -> BaseServiceSettings:
        using_dev_key = self.jwt_public_key.strip() == DEV_PUBLIC_KEY.strip()
        if using_dev_key and self.env == "production":
            raise ValueError("JWT_PUBLIC_KEY/JWT_PRIVATE_KEY must be set in production")
        if using_dev_key and self.env == "development":
            logging.getLogger("core.settings").warning(
                "using the development JWT key pair; set JWT_PRIVATE_KEY and JWT_PUBLIC_KEY"
            )
        return self
