"""Fixtures of the dashboard's tests: settings with short windows, a shared in-memory bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.bus import Bus, Envelope, InMemoryTransport
from web import Settings

WebSettingsFactory = Callable[..., Settings]


@pytest.fixture
def web_settings(redis_namespace: str) -> WebSettingsFactory:
    """A factory of dashboard settings: in-memory bus, fast pushes, short silences."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "redis_namespace": redis_namespace,
            "bus_transport": "memory",
            "dashboard_push_interval": 0.1,
            "metrics_snapshot_interval": 0.2,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
async def transport() -> AsyncIterator[InMemoryTransport]:
    """The in-memory transport the apps of a test share."""
    shared = InMemoryTransport()
    await shared.start()
    yield shared
    await shared.stop()


@pytest.fixture
async def publisher(transport: InMemoryTransport) -> Bus:
    """A bus on the shared transport, to publish events as other services would."""
    return Bus(transport, source="tester")


def snapshot_data(
    service: str = "users", instance: str = "host:1:abc", **extra: Any
) -> dict[str, Any]:
    """The ``data`` of a ``metrics.snapshot`` envelope."""
    now = datetime.now(UTC).isoformat()
    data: dict[str, Any] = {
        "service": service,
        "instance": instance,
        "host": "host",
        "started_at": now,
        "at": now,
        "interval": 1.0,
        "requests": {
            "count": 50,
            "rate": 50.0,
            "in_flight": 2,
            "p50_ms": 3.0,
            "p95_ms": 9.0,
            "p99_ms": 20.0,
        },
        "errors": {"server": 1, "client": 4, "server_rate": 1.0, "client_rate": 4.0, "ratio": 0.1},
        "process": {"pid": 1, "cpu_percent": 12.5, "rss_bytes": 50 * 2**20},
        "cache": {"memory": {"hits": 90, "misses": 10, "ratio": 0.9}},
        "bus": {
            "connected": True,
            "published": 10,
            "consumed": 5,
            "retried": 1,
            "parked": 0,
            "outbox_pending": 2,
            "outbox_lag_seconds": 0.5,
        },
        "business": {},
    }
    data.update(extra)
    return data


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    correlation_id: str | None = None,
    source: str = "tester",
) -> Envelope:
    """An envelope as a service would publish it."""
    return Envelope(
        type=event_type, data=data, correlation_id=correlation_id or uuid.uuid4().hex, source=source
    )
