"""Settings of the dashboard (the ``web`` app)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from core.settings import BaseServiceSettings

__all__ = ["Settings"]


class Settings(BaseServiceSettings):
    """``WEB_PORT`` (8080) and how long and how the dashboard keeps what it saw.

    - ``dashboard_retention``: seconds of history kept per instance (charts, events); an instance
      silent for that long is forgotten;
    - ``dashboard_push_interval``: seconds between two live updates sent to each browser;
    - ``dashboard_stale_after`` / ``dashboard_down_after``: seconds without a snapshot after
      which an instance shows as degraded, then down;
    - ``dashboard_error_ratio``: the share of 5xx responses over which an instance is degraded;
    - ``dashboard_orders`` / ``dashboard_events``: how many orders (saga view) and recent events
      are kept.
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
