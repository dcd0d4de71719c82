"""Every flow of API.md that exists today, through the gateway, to real service processes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from openapi_spec_validator import validate

from core.bus import Bus, InMemoryTransport, Message
from core.snapshot import MetricsSnapshot
from core.testing import assert_problem, wait_for
from gateway import create_gateway_app
from tests.gateway.conftest import Client, FakeFactory, GatewayFactory, UsersProcess, metric

PASSWORD = "correct horse battery"


@pytest.fixture
async def gateway(users_upstream: UsersProcess, make_gateway: GatewayFactory) -> Client:
    return await make_gateway(upstream_users=users_upstream.url, ready_upstreams=["users"])


async def _register(gateway: Client, **extra: str) -> dict[str, Any]:
    email = f"gw-{uuid.uuid4().hex[:10]}@Example.com"
    response = await gateway.post(
        "/api/v1/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "Gateway User", **extra},
    )
    assert response.status == 201, await response.text()
    user: dict[str, Any] = await response.json()
    return user


async def _login(gateway: Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await gateway.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status == 200, await response.text()
    tokens: dict[str, Any] = await response.json()
    return tokens


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_register_login_profile_refresh_logout(gateway: Client) -> None:
    user = await _register(gateway)
    assert set(user) >= {"id", "email", "full_name", "roles", "created_at"}
    assert user["roles"] == ["customer"]
    assert user["email"] == user["email"].lower()
    taken = await gateway.post(
        "/api/v1/auth/register",
        json={"email": user["email"].upper(), "password": PASSWORD, "full_name": "X"},
    )
    await assert_problem(taken, 409)
    wrong = await gateway.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "wrong password"}
    )
    unknown = await gateway.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert (await assert_problem(wrong, 401))["detail"] == (await assert_problem(unknown, 401))[
        "detail"
    ]

    tokens = await _login(gateway, user["email"])
    assert tokens["token_type"] == "bearer"
    me = await gateway.get("/api/v1/users/me", headers=_bearer(tokens))
    assert me.status == 200
    assert (await me.json())["id"] == user["id"]
    patched = await gateway.patch(
        "/api/v1/users/me", json={"full_name": "Renamed"}, headers=_bearer(tokens)
    )
    assert (await patched.json())["full_name"] == "Renamed"

    renewed = await gateway.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert renewed.status == 200
    pair = await renewed.json()
    reused = await gateway.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    await assert_problem(reused, 401)  # a reused refresh token revokes the family
    await assert_problem(await gateway.get("/api/v1/users/me", headers=_bearer(pair)), 401)

    fresh = await _login(gateway, user["email"])
    logout = await gateway.post("/api/v1/auth/logout", headers=_bearer(fresh))
    assert logout.status == 204
    after = await gateway.get("/api/v1/users/me", headers=_bearer(fresh))
    await assert_problem(after, 401)
    assert await metric(gateway, "gateway_auth_rejections_total", reason="revoked") >= 1


async def test_a_password_change_ends_every_session_at_the_gateway(gateway: Client) -> None:
    user = await _register(gateway)
    tokens = await _login(gateway, user["email"])
    changed = await gateway.patch(
        "/api/v1/users/me",
        json={"password": "a brand new password", "current_password": PASSWORD},
        headers=_bearer(tokens),
    )
    assert changed.status == 200, await changed.text()
    await assert_problem(await gateway.get("/api/v1/users/me", headers=_bearer(tokens)), 401)
    renewed = await _login(gateway, user["email"], "a brand new password")
    assert (await gateway.get("/api/v1/users/me", headers=_bearer(renewed))).status == 200


async def test_admin_lists_users_and_sets_roles(
    gateway: Client, gateway_users_db: asyncpg.Connection
) -> None:
    admin, other = await _register(gateway), await _register(gateway)
    customer = await _login(gateway, other["email"])
    await assert_problem(await gateway.get("/api/v1/users", headers=_bearer(customer)), 403)
    await gateway_users_db.execute(
        "UPDATE users SET roles = ARRAY['admin', 'customer'] WHERE id = $1",
        uuid.UUID(admin["id"]),
    )
    tokens = await _login(gateway, admin["email"])
    listing = await gateway.get("/api/v1/users?limit=2", headers=_bearer(tokens))
    assert listing.status == 200
    page = await listing.json()
    assert len(page["items"]) == 2
    assert "next_cursor" in page
    roles = await gateway.put(
        f"/api/v1/users/{other['id']}/roles", json={"roles": ["admin"]}, headers=_bearer(tokens)
    )
    assert roles.status == 200
    assert (await roles.json())["roles"] == ["admin"]
    # Changing roles revokes the user's tokens: the gateway refuses the old one.
    await assert_problem(await gateway.get("/api/v1/users/me", headers=_bearer(customer)), 401)


async def test_idempotency_key_replays_through_the_gateway(gateway: Client) -> None:
    body = {"email": f"idem-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD}
    body["full_name"] = "Idem"
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = await gateway.post("/api/v1/auth/register", json=body, headers=headers)
    second = await gateway.post("/api/v1/auth/register", json=body, headers=headers)
    assert first.status == second.status == 201
    assert await first.json() == await second.json()


async def test_the_correlation_id_reaches_the_upstream_logs_and_comes_back(
    gateway: Client, users_upstream: UsersProcess
) -> None:
    correlation = f"gw-corr-{uuid.uuid4().hex}"
    response = await gateway.post(
        "/api/v1/auth/login",
        json={"email": "nobody@example.com", "password": PASSWORD},
        headers={"X-Correlation-ID": correlation},
    )
    assert response.headers["X-Correlation-ID"] == correlation
    assert (await response.json())["correlation_id"] == correlation

    async def logged() -> list[dict[str, Any]]:
        text = await asyncio.to_thread(users_upstream.log_lines)
        lines = [json.loads(line) for line in text if correlation in line]
        return [line for line in lines if line.get("correlation_id") == correlation]

    records = await wait_for(logged)
    assert any(record.get("logger") == "core.access" for record in records), records
    fresh = await gateway.get("/api/v1/users/me")  # without one, the gateway makes one up
    assert len(fresh.headers["X-Correlation-ID"]) == 32


async def test_operational_routes(
    gateway: Client, fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    assert (await gateway.get("/healthz")).status == 200
    ready = await gateway.get("/readyz")
    assert ready.status == 200, await ready.text()
    assert set((await ready.json())["checks"]) == {"redis", "upstream:users"}
    docs = await gateway.get("/docs")
    assert docs.status == 200
    assert "swagger-ui" in await docs.text()
    await gateway.post("/api/v1/auth/login", json={"email": "x@example.com", "password": "x"})
    metrics = await (await gateway.get("/metrics")).text()
    assert 'route="/api/v1/auth{tail}"' in metrics  # core's request metrics, per route
    assert 'gateway_upstream_requests_total{instance="users-0"' in metrics

    unready = await make_gateway(ready_upstreams=["orders"])
    response = await unready.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["upstream:orders"]["status"] == "down"


async def test_the_merged_openapi_document(
    users_upstream: UsersProcess, fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    products = await fake_upstream("products")
    gateway = await make_gateway(upstream_users=users_upstream.url, upstream_products=products.url)
    response = await gateway.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    await asyncio.to_thread(validate, document)  # it reads its meta-schemas from files
    paths = document["paths"]
    assert {"/api/v1/auth/login", "/api/v1/users/me", "/api/v1/products/{product_id}"} <= set(paths)
    assert "/healthz" not in paths  # each service's operational routes stay its own
    schemas = document["components"]["schemas"]
    assert "email" in schemas["UserOut"]["properties"]  # users' own
    assert "sku" in schemas["products_UserOut"]["properties"]  # the fake's, renamed
    product = paths["/api/v1/products/{product_id}"]["get"]
    assert product["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/products_UserOut"
    }
    assert paths["/api/v1/categories"]["get"]["operationId"] == "products_register"
    assert "429" in paths["/api/v1/auth/login"]["post"]["responses"]
    assert "orders" in document["info"]["description"]  # not running: named as missing


@pytest.fixture
async def shop(
    users_upstream: UsersProcess, products_upstream: UsersProcess, make_gateway: GatewayFactory
) -> Client:
    return await make_gateway(
        upstream_users=users_upstream.url,
        upstream_products=products_upstream.url,
        ready_upstreams=["users", "products"],
    )


async def _admin(shop: Client, db: asyncpg.Connection) -> dict[str, str]:
    admin = await _register(shop)
    await db.execute(
        "UPDATE users SET roles = ARRAY['admin', 'customer'] WHERE id = $1",
        uuid.UUID(admin["id"]),
    )
    return _bearer(await _login(shop, admin["email"]))


async def test_the_catalog_and_inventory_through_the_gateway(
    shop: Client, gateway_users_db: asyncpg.Connection
) -> None:
    admin = await _admin(shop, gateway_users_db)
    customer = _bearer(await _login(shop, (await _register(shop))["email"]))
    slug = f"lamps-{uuid.uuid4().hex[:6]}"

    # Writes: anonymous is refused at the edge, a customer by the service, an admin passes.
    category = {"name": "Lamps", "slug": slug}
    await assert_problem(await shop.post("/api/v1/categories", json=category), 401)
    await assert_problem(
        await shop.post("/api/v1/categories", json=category, headers=customer), 403
    )
    made = await shop.post("/api/v1/categories", json=category, headers=admin)
    assert made.status == 201, await made.text()
    category_id = (await made.json())["id"]
    sku = f"GW-{uuid.uuid4().hex[:8]}"
    product = {"sku": sku, "name": "Walnut lamp", "price_cents": 4200, "category_id": category_id}
    created = await shop.post("/api/v1/products", json={**product, "stock": 3}, headers=admin)
    assert created.status == 201, await created.text()
    product_id = (await created.json())["id"]
    await assert_problem(await shop.post("/api/v1/products", json=product, headers=admin), 409)
    await assert_problem(
        await shop.post("/api/v1/products", json={**product, "price_cents": -1}, headers=admin),
        422,
    )

    # Reads are public.
    read = await shop.get(f"/api/v1/products/{product_id}")
    assert read.status == 200
    assert {k: (await read.json())[k] for k in ("sku", "price_cents", "stock")} == {
        "sku": sku,
        "price_cents": 4200,
        "stock": 3,
    }
    listing = await shop.get(f"/api/v1/products?category={category_id}&sort=price&limit=5")
    assert [item["id"] for item in (await listing.json())["items"]] == [product_id]
    categories = await (await shop.get("/api/v1/categories?limit=100")).json()
    assert slug in [c["slug"] for c in categories["items"]]
    await assert_problem(await shop.get(f"/api/v1/products/{uuid.uuid4()}"), 404)
    await assert_problem(await shop.get("/api/v1/products?limit=101"), 422)

    # Inventory.
    inventory = f"/api/v1/products/{product_id}/inventory"
    assert await (await shop.get(inventory)).json() == {
        "product_id": product_id,
        "on_hand": 3,
        "reserved": 0,
        "available": 3,
    }
    await assert_problem(await shop.put(inventory, json={"on_hand": 9}, headers=customer), 403)
    updated = await shop.put(inventory, json={"on_hand": 9}, headers=admin)
    assert updated.status == 200
    assert (await updated.json())["available"] == 9

    async def fresh() -> bool:
        return bool((await (await shop.get(f"/api/v1/products/{product_id}")).json())["stock"] == 9)

    await wait_for(fresh, within=2)  # a cached read is never staler than the write plus 1 s
    patched = await shop.patch(
        f"/api/v1/products/{product_id}", json={"price_cents": 3900}, headers=admin
    )
    assert patched.status == 200
    assert (await shop.delete(f"/api/v1/products/{product_id}", headers=admin)).status == 204
    await assert_problem(await shop.get(f"/api/v1/products/{product_id}"), 404)


async def test_the_gateway_reports_its_traffic_to_the_dashboard_and_needs_no_broker(
    aiohttp_client: Callable[..., Awaitable[Client]],
    gateway_settings: Callable[..., Any],
    fake_upstream: FakeFactory,
) -> None:
    fake = await fake_upstream("p")
    transport = InMemoryTransport()
    listener = Bus(transport, source="dashboard")
    snapshots: list[MetricsSnapshot] = []

    async def collect(message: Message) -> None:
        assert isinstance(message.event, MetricsSnapshot)
        snapshots.append(message.event)

    listener.subscribe("metrics.snapshot", collect, queue="dash", events=[MetricsSnapshot])
    await listener.start()
    try:
        settings = gateway_settings(upstream_products=fake.url, metrics_snapshot_interval=0.2)
        gateway = await aiohttp_client(create_gateway_app(settings, transport=transport))
        for _ in range(5):
            assert (await gateway.get("/api/v1/products/1")).status == 200

        async def counted() -> MetricsSnapshot | None:
            served = [s for s in snapshots if s.service == "gateway" and s.requests.count >= 5]
            return served[-1] if served else None

        await wait_for(counted, within=5)
    finally:
        await listener.stop()

    # With RabbitMQ away (nothing listens on port 1), the gateway is ready all the same.
    away = gateway_settings(bus_transport="amqp", amqp_url="amqp://guest:guest@127.0.0.1:1/")
    alone = await aiohttp_client(create_gateway_app(away))
    ready = await alone.get("/readyz")
    assert ready.status == 200, await ready.text()
