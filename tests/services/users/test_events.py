"""The users service publishes user.registered and user.roles_changed through its outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.bus import Bus, InMemoryTransport, Message
from core.testing import assert_problem, wait_for
from services.users import Settings, create_users_app
from services.users.events import UserRegistered, UserRolesChanged

Client = TestClient[Any, Any]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[InMemoryTransport, list[Message]]]:
    """A shared in-memory transport and what an outside subscriber of ``user.#`` received."""
    transport = InMemoryTransport()
    outside = Bus(transport, source="outside")
    received: list[Message] = []

    async def collect(message: Message) -> None:
        received.append(message)

    outside.subscribe("user.#", collect, queue="outside", events=[UserRegistered, UserRolesChanged])
    await outside.start()
    yield transport, received
    await outside.stop()


@pytest.fixture
async def client(
    service_client: Callable[[web.Application], Awaitable[Client]],
    users_settings: Settings,
    listener: tuple[InMemoryTransport, list[Message]],
) -> Client:
    return await service_client(create_users_app(users_settings, transport=listener[0]))


def _of(received: list[Message], event_type: str) -> list[Message]:
    return [m for m in received if m.envelope.type == event_type]


async def test_registration_publishes_user_registered_with_the_request_correlation_id(
    client: Client,
    listener: tuple[InMemoryTransport, list[Message]],
    users_db: asyncpg.Connection,
) -> None:
    _, received = listener
    email = f"ev-{uuid.uuid4().hex[:10]}@example.com"
    try:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "long-enough-pw", "full_name": "Eve"},
            headers={"X-Correlation-ID": "corr-registration-1"},
        )
        assert response.status == 201
        user = await response.json()

        async def arrived() -> list[Message]:
            return [
                m
                for m in _of(received, "user.registered")
                if isinstance(m.event, UserRegistered) and m.event.email == email
            ]

        (message,) = await wait_for(arrived, within=5)
        envelope = message.envelope
        assert envelope.correlation_id == "corr-registration-1"
        assert envelope.source == "users"
        assert envelope.version == 1
        assert isinstance(message.event, UserRegistered)
        assert str(message.event.user_id) == user["id"]
        assert message.event.roles == ["customer"]

        async def marked_sent() -> bool:
            # The relay marks the row after the broker took it; a consumer may see it first.
            return bool(
                await users_db.fetchval(
                    "SELECT published_at IS NOT NULL FROM outbox WHERE id = $1", envelope.id
                )
            )

        await wait_for(marked_sent, within=5)
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_a_refused_registration_records_no_event(
    client: Client, users_db: asyncpg.Connection
) -> None:
    email = f"ev-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": "long-enough-pw", "full_name": "Dup"}
    try:
        assert (await client.post("/api/v1/auth/register", json=body)).status == 201
        before = await users_db.fetchval("SELECT count(*) FROM outbox")
        await assert_problem(await client.post("/api/v1/auth/register", json=body), 409)
        assert await users_db.fetchval("SELECT count(*) FROM outbox") == before
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_a_role_change_publishes_user_roles_changed(
    client: Client,
    listener: tuple[InMemoryTransport, list[Message]],
    users_db: asyncpg.Connection,
) -> None:
    _, received = listener
    emails = [f"ev-{uuid.uuid4().hex[:10]}@example.com" for _ in range(2)]
    try:
        ids = []
        for email in emails:
            resp = await client.post(
                "/api/v1/auth/register",
                json={"email": email, "password": "long-enough-pw", "full_name": "R"},
            )
            ids.append((await resp.json())["id"])
        await users_db.execute(
            "UPDATE users SET roles = ARRAY['admin', 'customer'] WHERE email = $1", emails[0]
        )
        login = await client.post(
            "/api/v1/auth/login", json={"email": emails[0], "password": "long-enough-pw"}
        )
        token = (await login.json())["access_token"]
        response = await client.put(
            f"/api/v1/users/{ids[1]}/roles",
            json={"roles": ["customer", "admin"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 200

        async def arrived() -> list[UserRolesChanged]:
            return [
                m.event
                for m in _of(received, "user.roles_changed")
                if isinstance(m.event, UserRolesChanged) and str(m.event.user_id) == ids[1]
            ]

        (event,) = await wait_for(arrived, within=5)
        assert event.roles == ["admin", "customer"]
        assert event.previous_roles == ["customer"]
    finally:
        await users_db.execute("DELETE FROM users WHERE email = ANY($1::text[])", emails)


async def test_bus_traffic_shows_in_metrics(
    client: Client,
    listener: tuple[InMemoryTransport, list[Message]],
    users_db: asyncpg.Connection,
) -> None:
    # The listener subscribes, so that published events have somewhere to go.
    email = f"ev-{uuid.uuid4().hex[:10]}@example.com"
    try:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "long-enough-pw", "full_name": "Metric"},
        )
        assert response.status == 201

        async def published() -> str | None:
            text = await (await client.get("/metrics")).text()
            return text if 'bus_published_total{type="user.registered"}' in text else None

        text = await wait_for(published, within=5)
        assert "bus_publish_duration_seconds_bucket" in text
        assert "bus_outbox_lag_seconds" in text
        assert "bus_outbox_pending" in text
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)
