"""The users service's operational surface: OpenAPI, docs, readiness, start-up admin."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pydantic import SecretStr

from services.users import Settings, create_users_app

API_ROUTES = {
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/users/me"),
    ("patch", "/api/v1/users/me"),
    ("get", "/api/v1/users"),
    ("put", "/api/v1/users/{user_id}/roles"),
    ("get", "/api/v1/roles"),
}


async def test_openapi_documents_every_contract_route_and_is_valid(
    users_client: TestClient[Any, Any],
) -> None:
    response = await users_client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    await asyncio.to_thread(validate, document)  # the validator reads its schemas from disk
    routes = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert routes == API_ROUTES
    register = document["paths"]["/api/v1/auth/register"]["post"]
    assert {p["name"] for p in register["parameters"]} == {"Idempotency-Key"}
    assert set(register["responses"]) >= {"201", "409", "422"}
    me = document["paths"]["/api/v1/users/me"]["get"]
    assert me["security"] == [{"bearerAuth": []}]
    assert "401" in me["responses"]


async def test_readyz_reports_postgres_redis_and_the_bus(
    users_client: TestClient[Any, Any],
) -> None:
    response = await users_client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["checks"] == {
        "bus": {"status": "up"},
        "postgres": {"status": "up"},
        "redis": {"status": "up"},
    }


async def test_admin_from_settings_is_created_at_start_up(
    service_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
    users_settings: Settings,
    users_db: asyncpg.Connection,
) -> None:
    email = f"boot-{uuid.uuid4().hex[:10]}@example.com"
    settings = users_settings.model_copy(
        update={"admin_email": email, "admin_password": SecretStr("bootstrap-password")}
    )
    try:
        client = await service_client(create_users_app(settings))
        login = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "bootstrap-password"}
        )
        assert login.status == 200
        token = (await login.json())["access_token"]
        listing = await client.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
        assert listing.status == 200
        roles = await users_db.fetchval("SELECT roles FROM users WHERE email = $1", email)
        assert sorted(roles) == ["admin", "customer"]
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_admin_from_settings_never_promotes_an_account_registered_first(
    service_client: Callable[[web.Application], Awaitable[TestClient[Any, Any]]],
    users_settings: Settings,
    users_db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Register the operator's ADMIN_EMAIL before the service starts: you do not become admin."""
    email = f"boot-{uuid.uuid4().hex[:10]}@example.com"
    first = await service_client(create_users_app(users_settings))
    squatter = {"email": email, "password": "the squatters password", "full_name": "Eve"}
    assert (await first.post("/api/v1/auth/register", json=squatter)).status == 201
    settings = users_settings.model_copy(
        update={"admin_email": email, "admin_password": SecretStr("bootstrap-password")}
    )
    try:
        with caplog.at_level(logging.ERROR, logger="services.users"):
            client = await service_client(create_users_app(settings))
        assert any("refusing to promote" in r.getMessage() for r in caplog.records)
        roles = await users_db.fetchval("SELECT roles FROM users WHERE email = $1", email)
        assert roles == ["customer"]
        # The squatter's password still opens only a customer account; the operator's opens none.
        login = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "bootstrap-password"}
        )
        assert login.status == 401
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_asyncapi_describes_the_published_events(users_client: TestClient[Any, Any]) -> None:
    response = await users_client.get("/asyncapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    # metrics.snapshot: every instance publishes its own (core.snapshot)
    assert addresses == {"user.registered", "user.roles_changed", "metrics.snapshot"}
    sends = [op for op in document["operations"].values() if op["action"] == "send"]
    assert len(sends) == 3
    message = document["components"]["messages"]["UserRegisteredV1"]
    payload = message["payload"]
    assert payload["properties"]["type"] == {"const": "user.registered"}
    assert set(payload["required"]) >= {"type", "source", "data"}
    data_ref = payload["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
    assert set(document["components"]["schemas"][data_ref]["properties"]) == {
        "user_id",
        "email",
        "full_name",
        "roles",
        "created_at",
    }
