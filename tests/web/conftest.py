"""Fixtures of the dashboard's tests: settings with short windows, a shared in-memory bus,
clients of the dashboard app and access tokens signed with the development key pair."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.auth import IssuedToken, TokenCodec
from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY
from core.bus import Bus, Envelope, InMemoryTransport
from web import Settings, create_web_app

WebSettingsFactory = Callable[..., Settings]
Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

CODEC = TokenCodec(public_key=DEV_PUBLIC_KEY, private_key=DEV_PRIVATE_KEY)


def issue(
    permissions: Sequence[str] = ("metrics:read",),
    *,
    user_id: str | None = None,
    expires_in: float | None = None,
    codec: TokenCodec = CODEC,
) -> IssuedToken:
    """An access token as the users service issues it (``perms`` claim); ``expires_in``: seconds
    of validity left (the token is backdated)."""
    now = None if expires_in is None else time.time() - codec.access_ttl + expires_in
    return codec.issue(
        "access",
        user_id=user_id or str(uuid.uuid4()),
        roles=["admin" if "metrics:read" in permissions else "customer"],
        family=str(uuid.uuid4()),
        permissions=permissions,
        now=now,
    )


def bearer(token: IssuedToken | str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``."""
    value = token if isinstance(token, str) else token.token
    return {"Authorization": f"Bearer {value}"}


def operator() -> dict[str, str]:
    """The header of a fresh token with ``metrics:read``."""
    return bearer(issue())


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
        if not {"archive_enabled", "archive_database_url", "mongodb_url"} & set(overrides):
            values["archive_enabled"] = False  # never the default database: tests name theirs
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
async def make_client(
    service_client: Callable[[web.Application], Awaitable[Client]],
    web_settings: WebSettingsFactory,
    transport: InMemoryTransport,
) -> ClientFactory:
    """``await make_client(**settings)``: a client of a running dashboard on the shared bus
    (``env="test"``: its data needs a token with ``metrics:read`` unless ``dashboard_public``)."""

    async def factory(**overrides: Any) -> Client:
        return await service_client(create_web_app(web_settings(**overrides), transport=transport))

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


def order_placed(order_id: str, total_cents: int, currency: str = "USD") -> dict[str, Any]:
    """The ``data`` of an ``order.placed`` of one line."""
    return {
        "order_id": order_id,
        "user_id": str(uuid.uuid4()),
        "items": [
            {"product_id": str(uuid.uuid4()), "quantity": 1, "unit_price_cents": total_cents}
        ],
        "total_cents": total_cents,
        "currency": currency,
    }


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
