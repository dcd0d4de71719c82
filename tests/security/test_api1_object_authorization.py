"""API1 (broken object-level authorization) and API5 (function-level): every route that takes an
id, with someone else's id, as every role of API.md.

Each case is the status the role must get; a missing check (an owner test, a permission on a
route) turns a 404/403 into a 2xx, and the case fails. Refused writes are checked to have
changed nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.testing import assert_problem
from tests.security.conftest import ROLES, Session, User

# role -> status, for each operation on a resource that is not the caller's.
READ_ORDER = {
    "customer": 404,
    "admin": 200,
    "catalog_manager": 404,
    "support": 200,
    "fulfillment": 200,
}
CANCEL_ORDER = {
    "customer": 404,
    "admin": 202,
    "catalog_manager": 404,
    "support": 202,
    "fulfillment": 403,
}
SHIP_ORDER = {
    "customer": 403,
    "admin": 200,
    "catalog_manager": 403,
    "support": 403,
    "fulfillment": 200,
}
CATALOG_WRITE = {
    "customer": 403,
    "admin": 200,
    "catalog_manager": 200,
    "support": 403,
    "fulfillment": 403,
}
SET_ROLES = {
    "customer": 403,
    "admin": 200,
    "catalog_manager": 403,
    "support": 403,
    "fulfillment": 403,
}
LIST_USERS = {
    "customer": 403,
    "admin": 200,
    "catalog_manager": 403,
    "support": 200,
    "fulfillment": 403,
}


async def _status(session: Session, method: str, path: str, user: User, **kw: Any) -> int:
    async with session.http.request(method, path, headers=user.headers, **kw) as response:
        if response.status >= 400:
            await assert_problem(response, response.status)
        return response.status


@pytest.mark.parametrize("role", ROLES)
async def test_reading_someone_elses_order_and_its_events(session: Session, role: str) -> None:
    admin, owner = await session.user("admin"), await session.user()
    caller = await session.user(role)
    product = await session.product(admin)
    order = await session.order(owner, product["id"])
    for path in (f"/api/v1/orders/{order['id']}", f"/api/v1/orders/{order['id']}/events"):
        assert await _status(session, "GET", path, caller) == READ_ORDER[role], (role, path)
        assert await _status(session, "GET", path, owner) == 200
    # The listing never shows another's orders to a caller without orders:read_all.
    path = f"/api/v1/orders?user_id={owner.id}&limit=100"
    async with session.http.get(path, headers=caller.headers) as response:
        if response.status == 200:
            ids = {item["id"] for item in (await response.json())["items"]}
            assert (order["id"] in ids) == (READ_ORDER[role] == 200), (role, ids)
        else:
            assert response.status == 403, await response.text()
            assert READ_ORDER[role] != 200


@pytest.mark.parametrize("role", ROLES)
async def test_cancelling_someone_elses_order(session: Session, role: str) -> None:
    admin, owner = await session.user("admin"), await session.user()
    caller = await session.user(role)
    product = await session.product(admin)
    order = await session.order(owner, product["id"])
    assert order["status"] == "confirmed", order
    path = f"/api/v1/orders/{order['id']}/cancel"
    expected = CANCEL_ORDER[role]
    assert await _status(session, "POST", path, caller) == expected, role
    async with session.http.get(f"/api/v1/orders/{order['id']}", headers=owner.headers) as resp:
        status = (await resp.json())["status"]
    assert status == ("cancelled" if expected == 202 else "confirmed"), (role, status)


@pytest.mark.parametrize("role", ROLES)
async def test_shipping_someone_elses_order(session: Session, role: str) -> None:
    admin, owner = await session.user("admin"), await session.user()
    caller = await session.user(role)
    product = await session.product(admin)
    order = await session.order(owner, product["id"])
    path = f"/api/v1/orders/{order['id']}/ship"
    expected = SHIP_ORDER[role]
    assert await _status(session, "POST", path, caller) == expected, role
    async with session.http.get(f"/api/v1/orders/{order['id']}", headers=owner.headers) as resp:
        status = (await resp.json())["status"]
    assert status == ("shipped" if expected == 200 else "confirmed"), (role, status)


async def test_an_owner_cannot_ship_their_own_order(session: Session) -> None:
    admin, owner = await session.user("admin"), await session.user()
    order = await session.order(owner, (await session.product(admin))["id"])
    assert await _status(session, "POST", f"/api/v1/orders/{order['id']}/ship", owner) == 403


async def test_an_unknown_order_is_404_for_everyone(session: Session) -> None:
    admin = await session.user("admin")
    missing = uuid.uuid4()
    for path in (f"/api/v1/orders/{missing}", f"/api/v1/orders/{missing}/events"):
        assert await _status(session, "GET", path, admin) == 404


@pytest.mark.parametrize("role", ROLES)
async def test_catalog_and_inventory_writes(session: Session, role: str) -> None:
    admin, caller = await session.user("admin"), await session.user(role)
    product = await session.product(admin, stock=5)
    path = f"/api/v1/products/{product['id']}"
    expected = CATALOG_WRITE[role]
    created = {
        "sku": f"SEC-{uuid.uuid4().hex[:10]}",
        "name": "by " + role,
        "price_cents": 100,
    }
    assert await _status(session, "POST", "/api/v1/products", caller, json=created) == (
        201 if expected == 200 else expected
    )
    category = {"name": "Cat " + role, "slug": f"cat-{uuid.uuid4().hex[:10]}"}
    assert await _status(session, "POST", "/api/v1/categories", caller, json=category) == (
        201 if expected == 200 else expected
    )
    patch = {"name": f"renamed by {role}", "price_cents": 1}
    assert await _status(session, "PATCH", path, caller, json=patch) == expected
    inventory = {"on_hand": 777}
    assert await _status(session, "PUT", f"{path}/inventory", caller, json=inventory) == expected
    async with session.http.get(path) as response:
        current = await response.json()
    if expected == 200:
        assert (current["name"], current["price_cents"], current["stock"]) == (
            patch["name"],
            1,
            777,
        )
    else:
        assert (current["name"], current["price_cents"], current["stock"]) == (
            product["name"],
            product["price_cents"],
            5,
        )
    assert await _status(session, "DELETE", path, caller) == (204 if expected == 200 else expected)
    async with session.http.get(path) as response:
        assert response.status == (404 if expected == 200 else 200)


@pytest.mark.parametrize("role", ROLES)
async def test_setting_roles(session: Session, role: str) -> None:
    caller, victim = await session.user(role), await session.user()
    expected = SET_ROLES[role]
    path = f"/api/v1/users/{victim.id}/roles"
    assert await _status(session, "PUT", path, caller, json={"roles": ["support"]}) == expected
    # Nobody without users:manage raises their own roles either.
    own = f"/api/v1/users/{caller.id}/roles"
    status = await _status(session, "PUT", own, caller, json={"roles": ["admin"]})
    assert status == expected, role
    victim_after = await session.login(victim.email)
    async with session.http.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {victim_after['access_token']}"}
    ) as response:
        me = await response.json()
    assert me["roles"] == (["support"] if expected == 200 else ["customer"]), (role, me)
    if expected != 200:
        fresh = await session.login(caller.email)
        headers = {"Authorization": f"Bearer {fresh['access_token']}"}
        async with session.http.get("/api/v1/users/me", headers=headers) as response:
            assert (await response.json())["roles"] == caller.roles


@pytest.mark.parametrize("role", ROLES)
async def test_reading_other_users(session: Session, role: str) -> None:
    caller = await session.user(role)
    status = await _status(session, "GET", "/api/v1/users?limit=5", caller)
    assert status == LIST_USERS[role], role
    status = await _status(session, "GET", "/api/v1/roles", caller)
    assert status == LIST_USERS[role], role


async def test_every_id_route_needs_a_token(session: Session) -> None:
    some = uuid.uuid4()
    for method, path in (
        ("GET", f"/api/v1/orders/{some}"),
        ("GET", f"/api/v1/orders/{some}/events"),
        ("POST", f"/api/v1/orders/{some}/cancel"),
        ("POST", f"/api/v1/orders/{some}/ship"),
        ("PUT", f"/api/v1/users/{some}/roles"),
        ("PATCH", f"/api/v1/products/{some}"),
        ("DELETE", f"/api/v1/products/{some}"),
        ("PUT", f"/api/v1/products/{some}/inventory"),
        ("POST", "/api/v1/products"),
        ("POST", "/api/v1/categories"),
        ("GET", "/api/v1/users"),
    ):
        async with session.http.request(method, path, json={}) as response:
            await assert_problem(response, 401)
