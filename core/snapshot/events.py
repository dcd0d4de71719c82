"""``metrics.snapshot``, the event every service instance publishes about itself, and its figure
models. The figures' bounds are part of the contract: a consumer (the dashboard) validates what it
receives with these same models and drops a message that breaks them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from core.bus.events import Event

__all__ = [
    "MAX_COUNT",
    "MAX_FIGURE",
    "BusFigures",
    "CacheTierFigures",
    "Count",
    "ErrorFigures",
    "MetricsSnapshot",
    "ProcessFigures",
    "Ratio",
    "Real",
    "RequestFigures",
]

MAX_COUNT = 2**53  # counters since start: exact as JSON numbers
MAX_FIGURE = 1e15
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Real = Annotated[float, Field(ge=0, le=MAX_FIGURE, allow_inf_nan=False)]
Ratio = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True)


class RequestFigures(_Figures):
    """HTTP requests of the interval (latencies in milliseconds, None without requests)."""

    count: Count
    rate: Real
    in_flight: Count
    p50_ms: Real | None = None
    p95_ms: Real | None = None
    p99_ms: Real | None = None


class ErrorFigures(_Figures):
    """Error responses of the interval: 5xx (server) and 4xx (client)."""

    server: Count
    client: Count
    server_rate: Real
    client_rate: Real
    ratio: Ratio


class ProcessFigures(_Figures):
    """The process the instance runs in (shared by every app of a single-process mode)."""

    pid: Annotated[int, Field(ge=0, le=2**32)]
    cpu_percent: Real
    rss_bytes: Count


class CacheTierFigures(_Figures):
    """Lookups of one cache tier since start, over every cached function."""

    hits: Count
    misses: Count
    ratio: Ratio | None


class BusFigures(_Figures):
    """Bus traffic since start; outbox figures only for a service with an outbox relay."""

    connected: bool
    published: Count
    consumed: Count
    retried: Count
    parked: Count
    outbox_pending: Count | None = None
    outbox_lag_seconds: Real | None = None


class MetricsSnapshot(Event):
    """``metrics.snapshot``: one service instance's health and traffic over the last interval."""

    event_type = "metrics.snapshot"
    event_version = 1

    service: str
    instance: str
    host: str
    started_at: datetime
    at: datetime
    interval: float
    requests: RequestFigures
    errors: ErrorFigures
    process: ProcessFigures
    cache: dict[str, CacheTierFigures]
    bus: BusFigures | None = None
    business: dict[str, Any] = {}
