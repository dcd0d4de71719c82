"""The dashboard over real RabbitMQ: every dashboard sees everything, leaves nothing behind,
and drops malformed messages (counted) without breaking.

Runs on an exchange of its own, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.bus import Bus, Envelope
from core.bus.amqp import AmqpTransport
from core.snapshot import SNAPSHOT
from core.testing import wait_for
from services.users import Settings as UsersSettings
from services.users import create_users_app
from tests.web.conftest import WebSettingsFactory, envelope, operator, snapshot_data
from web import create_web_app
from web.app import FEED
from web.feed import open_feed

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
    watcher = Bus(AmqpTransport(AMQP_URL, exchange=exchange), source="second-dashboard")
    await watcher.connect()
    second = await open_feed(watcher, f"test-second-{uuid.uuid4().hex[:8]}", other.append)
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
            body: dict[str, Any] = await (
                await dashboard.get("/dashboard/api/state", headers=operator())
            ).json()
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
            body: dict[str, Any] = await (
                await dashboard.get("/dashboard/api/state", headers=operator())
            ).json()
            return bool(body["view"]["business"]["registrations_total"])

        await wait_for(registrations_figure, within=10)

        async def second_saw_it() -> bool:
            types = {(e.type, e.source) for e in other}
            return {("user.registered", "users"), ("metrics.snapshot", "users")} <= types

        await wait_for(second_saw_it, within=10)
        assert (await dashboard.get("/readyz")).status == 200
    finally:
        await watcher.stop()  # stops its broadcast subscription too

    feed_queue = dashboard.app[FEED].queue
    assert await _queue_exists(feed_queue)
    await dashboard.close()
    assert not await _queue_exists(feed_queue)  # exclusive: gone with the dashboard
    assert not await _queue_exists(second.queue)


async def _metric(client: Client, name: str, **labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name and all(
            f'{key}="{val}"' in sample for key, val in labels.items()
        ):
            total += float(value)
    return total


async def test_malformed_messages_over_rabbitmq_are_dropped_and_counted(
    service_client: Callable[[web.Application], Awaitable[Client]],
    web_settings: WebSettingsFactory,
    exchange: str,
) -> None:
    dashboard = await service_client(
        create_web_app(
            web_settings(bus_transport="amqp", metrics_snapshot_interval=0),
            transport=AmqpTransport(AMQP_URL, exchange=exchange),
        )
    )
    good = snapshot_data(instance="amqp-good:1")
    bad_snapshots = [
        {**good, "instance": "amqp-bad:1", "requests": "not an object"},
        {**good, "instance": "amqp-bad:2", "errors": {**good["errors"], "ratio": 7}},
        {**good, "instance": "x" * 5000},
        {**good, "instance": "amqp-bad:3", "business": {f"k{n}": n for n in range(1000)}},
    ]
    bodies = [b"not json at all", b'{"type": "metrics.snapshot"}']
    bodies += [envelope("metrics.snapshot", data).to_bytes() for data in bad_snapshots]
    bodies.append(envelope("order.placed", {"order_id": ["a", "list"]}).to_bytes())
    bodies.append(envelope("metrics.snapshot", good).to_bytes())
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for body in bodies:
            routing = "metrics.snapshot" if b"order.placed" not in body else "order.placed"
            await channel.basic_publish(body, exchange=exchange, routing_key=routing)
    finally:
        await connection.close()

    async def good_one_seen() -> dict[str, Any] | None:
        response = await dashboard.get("/dashboard/api/state", headers=operator())
        assert response.status == 200  # the view never breaks
        view: dict[str, Any] = (await response.json())["view"]
        keys = {i["key"] for s in view["services"] for i in s["instances"]}
        done = "users/amqp-good:1" in keys and view["totals"]["feed_rejected"] >= 5
        return view if done else None

    view = await wait_for(good_one_seen, within=15)
    keys = {i["key"] for s in view["services"] for i in s["instances"]}
    assert not any("amqp-bad" in key or "xxxx" in key for key in keys)
    assert view["totals"]["feed_rejected"] == 5
    assert await _metric(dashboard, "dashboard_feed_rejected_total", kind="envelope") == 2
    assert await _metric(dashboard, "dashboard_feed_rejected_total", kind="snapshot") == 4
    assert await _metric(dashboard, "dashboard_feed_rejected_total", kind="event") == 1
