"""Settings of ``aioshop backup`` and ``aioshop restore`` (each service's database URL comes from
that service's own settings)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from core.settings import BaseServiceSettings

__all__ = ["BackupSettings"]


class BackupSettings(BaseServiceSettings):
    """``RABBITMQ_MANAGEMENT_URL``, ``BACKUP_TOOL_TIMEOUT``; ``AMQP_URL`` from the base.

    ``rabbitmq_management_url`` (``http://user:password@host:15672``) is where the broker's
    definitions are read; unset, it is the host of ``AMQP_URL`` on port 15672 with the
    credentials of ``AMQP_URL``: no password of its own (``AMQP_URL``'s default, guest:guest,
    is the development one). ``tool_timeout`` bounds each ``pg_dump``, ``pg_restore`` and broker
    export, in seconds.
    """

    rabbitmq_management_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RABBITMQ_MANAGEMENT_URL", "rabbitmq_management_url"),
    )
    tool_timeout: float = Field(
        default=3600.0,
        gt=0,
        le=86_400,
        validation_alias=AliasChoices("BACKUP_TOOL_TIMEOUT", "tool_timeout"),
    )
