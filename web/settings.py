"""Settings of the dashboard (the ``web`` app)."""

from __future__ import annotations

import ipaddress
import logging

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from core.archive import ArchiveSettings

__all__ = ["METRICS_READ", "Settings"]

# The permission that opens the dashboard's data outside development (API.md "Conventions").
METRICS_READ = "metrics:read"


class Settings(ArchiveSettings):
    """``WEB_PORT`` (8080) and how long and how the dashboard keeps what it saw.

    - ``dashboard_retention``: seconds of history kept per instance (charts, events); an instance
      silent for that long is forgotten;
    - ``dashboard_push_interval``: seconds between two live updates sent to each browser;
    - ``dashboard_stale_after`` / ``dashboard_down_after``: seconds without a snapshot after
      which an instance shows as degraded, then down;
    - ``dashboard_error_ratio``: the share of 5xx responses over which an instance is degraded;
    - ``dashboard_orders`` / ``dashboard_events``: how many orders (saga view) and recent events
      are kept.

    Who sees what:

    - ``dashboard_public``: whether the data (``/dashboard/stream``, ``/dashboard/api/state``)
      is open to anyone; unset, it is open only when ``env`` is ``development``. Open, it hides
      host names, pids and order ids from callers without ``metrics:read``; closed, every data
      request needs an access token with ``metrics:read`` (the page itself shows a login form);
    - ``dashboard_trusted_proxies``: addresses (CIDR) of the proxies (the gateway) whose
      ``X-Forwarded-For`` names the client, for the per-client stream cap; none by default.

    Streams:

    - ``dashboard_stream_lifetime``: seconds after which a stream ends (the page reconnects); it
      also ends when the caller's access token expires;
    - ``dashboard_heartbeat``: seconds of silence after which a stream sends a ``: ping``
      comment (and checks that the caller's token was not revoked);
    - ``dashboard_streams_per_client``: open streams per user (per address when anonymous);
    - ``dashboard_streams_total``: open streams in all, of which ``dashboard_streams_reserved``
      only for callers with ``metrics:read``, so other streams cannot lock out an operator.

    Alerts: ``dashboard_alerts_token`` (``DASHBOARD_ALERTS_TOKEN`` or ``_FILE``) is the bearer
    token Alertmanager's webhook must send to ``POST /dashboard/api/alerts`` (``web.alerts``);
    unset, that endpoint answers 404.
    """

    port: int = Field(
        default=8080, ge=0, le=65535, validation_alias=AliasChoices("WEB_PORT", "port")
    )
    dashboard_retention: float = Field(default=600.0, ge=10, le=24 * 3600)
    dashboard_push_interval: float = Field(default=1.0, gt=0, le=10)
    dashboard_stale_after: float = Field(default=3.0, gt=0)
    dashboard_down_after: float = Field(default=10.0, gt=0)
    dashboard_error_ratio: float = Field(default=0.05, ge=0, le=1)
    dashboard_orders: int = Field(default=50, ge=1, le=1000)
    dashboard_events: int = Field(default=100, ge=1, le=5000)
    metrics_snapshot_interval: float = Field(default=1.0, ge=0, le=60)

    dashboard_public: bool | None = None
    dashboard_trusted_proxies: list[str] = Field(default_factory=list, max_length=64)
    dashboard_stream_lifetime: float = Field(default=900.0, gt=0, le=24 * 3600)
    dashboard_heartbeat: float = Field(default=15.0, gt=0, le=300)
    dashboard_streams_per_client: int = Field(default=4, ge=1, le=1000)
    dashboard_streams_total: int = Field(default=200, ge=1, le=100_000)
    dashboard_streams_reserved: int = Field(default=20, ge=0, le=100_000)
    dashboard_alerts_token: SecretStr | None = None

    @field_validator("dashboard_trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # a ValueError is a validation error
        return value

    @model_validator(mode="after")
    def _reserve_within_total(self) -> Settings:
        if self.dashboard_streams_reserved >= self.dashboard_streams_total:
            raise ValueError("dashboard_streams_reserved must be below dashboard_streams_total")
        if self.dashboard_public and self.env == "production":
            logging.getLogger("web.settings").warning(
                "DASHBOARD_PUBLIC is set in production: anyone can read the dashboard's data"
            )
        return self

    @property
    def dashboard_is_public(self) -> bool:
        """Whether the dashboard's data is open without a token (see ``dashboard_public``)."""
        if self.dashboard_public is not None:
            return self.dashboard_public
        return self.env == "development"
