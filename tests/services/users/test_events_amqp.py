"""An outside service on RabbitMQ receives user.registered after a registration via the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiormq.abc import DeliveredMessage

from core.testing import wait_for
from services.users import Settings, create_users_app

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def outside_consumer() -> AsyncIterator[list[DeliveredMessage]]:
    """A plain aiormq client with its own queue bound to ``user.registered``."""
    connection = await aiormq.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.exchange_declare("aioshop.events", exchange_type="topic", durable=True)
    declared = await channel.queue_declare(f"outside-{uuid.uuid4().hex[:8]}", exclusive=True)
    assert declared.queue is not None
    await channel.queue_bind(declared.queue, "aioshop.events", routing_key="user.registered")
    received: list[DeliveredMessage] = []

    async def on_message(message: DeliveredMessage) -> None:
        received.append(message)
        await message.channel.basic_ack(message.delivery_tag)

    await channel.basic_consume(declared.queue, on_message)
    yield received
    await connection.close()


async def test_an_outside_consumer_gets_user_registered_with_the_full_envelope(
    service_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
    users_settings: Settings,
    users_db: asyncpg.Connection,
    outside_consumer: list[DeliveredMessage],
) -> None:
    settings = users_settings.model_copy(update={"bus_transport": "amqp"})
    client = await service_client(create_users_app(settings))
    email = f"amqp-{uuid.uuid4().hex[:10]}@example.com"
    try:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "long-enough-pw", "full_name": "Outside"},
            headers={"X-Correlation-ID": "outside-corr-7"},
        )
        assert response.status == 201
        user_id = (await response.json())["id"]

        async def mine() -> list[dict[str, Any]]:
            bodies = [orjson.loads(m.body) for m in outside_consumer]
            return [b for b in bodies if b["data"].get("email") == email]

        (envelope,) = await wait_for(mine, within=10)
        assert set(envelope) == {
            "id",
            "type",
            "version",
            "occurred_at",
            "correlation_id",
            "causation_id",
            "source",
            "data",
        }
        assert envelope["type"] == "user.registered"
        assert envelope["version"] == 1
        assert envelope["source"] == "users"
        assert envelope["correlation_id"] == "outside-corr-7"
        assert envelope["data"]["user_id"] == user_id
        (message,) = [m for m in outside_consumer if orjson.loads(m.body)["id"] == envelope["id"]]
        assert message.header.properties.message_id == envelope["id"]
        assert message.header.properties.delivery_mode == 2  # persistent
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)
