"""The dashboard over real RabbitMQ: every dashboard sees everything, and leaves nothing behind.

Runs on an exchange of its own, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.bus import Envelope
from core.bus.amqp import AmqpTransport
from core.snapshot import SNAPSHOT
from core.testing import wait_for
from services.users import Settings as UsersSettings
from services.users import create_users_app
from tests.web.conftest import WebSettingsFactory
from web import create_web_app
from web.app import FEED
from web.feed import AmqpFeed

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
Client = TestClient[Any, Any]


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    name = f"test-dashboard-{uuid.uuid4().hex[:8]}"
    yield name
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(name)
    finally:
        await connection.close()


async def _queue_exists(name: str) -> bool:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            await channel.queue_declare(name, passive=True)
        except aiormq.ChannelNotFoundEntity:
            return False
        except aiormq.ChannelLockedResource:
            return True  # exclusive to its owner's connection, but there
        return True
    finally:
        await connection.close()


async def test_two_dashboards_each_see_every_snapshot_and_event_over_rabbitmq(
    service_client: Callable[[web.Application], Awaitable[Client]],
    users_settings: UsersSettings,
    web_settings: WebSettingsFactory,
    exchange: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METRICS_SNAPSHOT_INTERVAL", "0.2")
    users = await service_client(
        create_users_app(
            users_settings.model_copy(update={"bus_transport": "amqp"}),
            transport=AmqpTransport(AMQP_URL, exchange=exchange),
        )
    )
    dashboard = await service_client(
        create_web_app(
            web_settings(bus_transport="amqp"),
            transport=AmqpTransport(AMQP_URL, exchange=exchange),
        )
    )
    other: list[Envelope] = []
    second = AmqpFeed(
        AMQP_URL, f"test-second-{uuid.uuid4().hex[:8]}", other.append, exchange=exchange
    )
    await second.start()
    try:
        email = f"amqp-{uuid.uuid4().hex[:8]}@example.com"
        response = await users.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "long-enough-pw", "full_name": "<b>Rabbit</b>"},
            headers={"X-Correlation-ID": "corr-dashboard-amqp"},
        )
        assert response.status == 201
        users_instance = f"users/{users.app[SNAPSHOT].instance}"

        async def dashboard_saw_it() -> dict[str, Any] | None:
            body: dict[str, Any] = await (await dashboard.get("/dashboard/api/state")).json()
            view = body["view"]
            instances = {i["key"]: i for s in view["services"] for i in s["instances"]}
            registered = [
                e
                for e in view["events"]
                if e["type"] == "user.registered" and e["correlation_id"] == "corr-dashboard-amqp"
            ]
            if users_instance in instances and registered:
                return {"instance": instances[users_instance], "event": registered[0]}
            return None

        seen = await wait_for(dashboard_saw_it, within=15)
        assert seen["event"]["correlation_id"] == "corr-dashboard-amqp"
        assert seen["instance"]["health"] == "up"
        assert seen["instance"]["bus"]["connected"] is True
        assert seen["instance"]["bus"]["outbox_pending"] is not None

        async def registrations_figure() -> bool:
            body: dict[str, Any] = await (await dashboard.get("/dashboard/api/state")).json()
            return bool(body["view"]["business"]["registrations_total"])

        await wait_for(registrations_figure, within=10)

        async def second_saw_it() -> bool:
            types = {(e.type, e.source) for e in other}
            return {("user.registered", "users"), ("metrics.snapshot", "users")} <= types

        await wait_for(second_saw_it, within=10)
        assert (await dashboard.get("/readyz")).status == 200
    finally:
        await second.stop()

    feed_queue = dashboard.app[FEED].queue
    assert await _queue_exists(feed_queue)
    await dashboard.close()
    assert not await _queue_exists(feed_queue)  # exclusive: gone with the dashboard
    assert not await _queue_exists(second.queue)
