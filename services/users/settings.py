"""Settings of the users service."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from core.settings import BaseServiceSettings, database_url

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """``USERS_DATABASE_URL``, ``USERS_PORT``, ``BCRYPT_ROUNDS``, ``ADMIN_EMAIL``/``_PASSWORD``."""

    port: int = Field(
        default=8001, ge=0, le=65535, validation_alias=AliasChoices("USERS_PORT", "port")
    )
    database_url: str = Field(
        default=database_url("aioshop_users"),
        validation_alias=AliasChoices("USERS_DATABASE_URL", "database_url"),
    )
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    # Per-account login throttling (services.users.throttle): attempts without delay per client
    # address and per account (in 15 minutes), then a delay doubling from the base up to the cap
    # (seconds); never a lock-out.
    login_free_attempts: int = Field(default=5, ge=1, le=100)
    login_account_free_attempts: int = Field(default=50, ge=1, le=100_000)
    login_delay_base: float = Field(default=1.0, gt=0, le=60)
    login_delay_max: float = Field(default=60.0, gt=0, le=3600)
