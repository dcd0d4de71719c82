"""API3/API6 (mass assignment, broken object property level authorization): a customer sending
fields that only the system may set (``roles``, ``permissions``, ``id``, ``user_id``,
``price_cents``, ``total_cents``, ``status``, ...) in register, ``PATCH /users/me`` and
``POST /orders``. Each request must be refused (422: input models forbid extra fields) or the
fields ignored; never applied. Both outcomes are checked against what was stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from core.testing import assert_problem
from tests.security.conftest import PASSWORD, PRODUCT_PRICE, Session

PRIVILEGED_USER_FIELDS: dict[str, Any] = {
    "roles": ["admin"],
    "permissions": ["users:manage", "catalog:write"],
    "perms": ["users:manage"],
    "id": "00000000-0000-0000-0000-000000000001",
    "is_admin": True,
    "created_at": "2000-01-01T00:00:00Z",
    "password_hash": "$2b$04$abcdefghijklmnopqrstuv",
}


async def _me(session: Session, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.http.get("/api/v1/users/me", headers=headers) as response:
        assert response.status == 200, await response.text()
        me: dict[str, Any] = await response.json()
        return me


async def test_register_never_grants_roles_or_permissions(session: Session) -> None:
    for name, value in PRIVILEGED_USER_FIELDS.items():
        email = f"mass-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD, "full_name": "Mallory", name: value}
        async with session.http.post("/api/v1/auth/register", json=body) as response:
            if response.status == 422:
                # Refused for that field, not for something else about the body.
                problem = await assert_problem(response, 422)
                assert [e["loc"] for e in problem["errors"]] == [["body", name]], problem
                continue
            assert response.status == 201, (name, await response.text())
            created = await response.json()
        assert created["roles"] == ["customer"], (name, created)
        assert created["id"] != PRIVILEGED_USER_FIELDS["id"]
        tokens = await session.login(email)
        me = await _me(session, tokens["access_token"])
        assert (me["roles"], me["permissions"]) == (["customer"], []), (name, me)
        async with session.http.get(
            "/api/v1/users", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        ) as listing:
            await assert_problem(listing, 403)


async def test_profile_patch_never_grants_roles_or_changes_identity(session: Session) -> None:
    user = await session.user()
    before = await _me(session, user.access_token)
    for name, value in {**PRIVILEGED_USER_FIELDS, "email": "taken-over@example.com"}.items():
        body = {"full_name": "Mallory", name: value}
        async with session.http.patch(
            "/api/v1/users/me", json=body, headers=user.headers
        ) as response:
            if response.status == 422:
                await assert_problem(response, 422)
            else:
                assert response.status == 200, (name, await response.text())
        fresh = await session.login(user.email)  # a new token: roles are read at login
        me = await _me(session, fresh["access_token"])
        assert (me["id"], me["email"], me["roles"], me["permissions"]) == (
            before["id"],
            before["email"],
            ["customer"],
            [],
        ), (name, me)


async def test_an_order_takes_its_owner_prices_and_status_from_the_system(
    session: Session,
) -> None:
    admin, customer, victim = (
        await session.user("admin"),
        await session.user(),
        await session.user(),
    )
    product = await session.product(admin)
    line = {"product_id": product["id"], "quantity": 2}
    base: dict[str, Any] = {
        "items": [line],
        "shipping_address": {"line1": "1 Main St", "city": "Springfield"},
        "payment": {"token": "tok_visa"},
    }
    attempts: list[dict[str, Any]] = [
        {**base, "user_id": victim.id},
        {**base, "total_cents": 1},
        {**base, "status": "shipped"},
        {**base, "currency": "JPY"},
        {**base, "id": str(uuid.uuid4())},
        {**base, "reason": None, "created_at": "2000-01-01T00:00:00Z"},
        {**base, "items": [{**line, "unit_price_cents": 1}]},
        {**base, "items": [{**line, "price_cents": 1}]},
        {**base, "payment": {"token": "tok_visa", "amount_cents": 1, "status": "authorized"}},
    ]
    # The body without the extra fields is a valid order: a 422 below is for those fields.
    async with session.http.post("/api/v1/orders", json=base, headers=customer.headers) as ok:
        assert ok.status == 202, await ok.text()
    for body in attempts:
        async with session.http.post(
            "/api/v1/orders", json=body, headers=customer.headers
        ) as response:
            if response.status == 422:
                await assert_problem(response, 422)
                continue
            assert response.status == 202, (body, await response.text())
            order = await response.json()
        assert order["user_id"] == customer.id, (body, order)
        assert order["status"] == "pending", (body, order)
        assert order["total_cents"] == 2 * PRODUCT_PRICE, (body, order)
        assert order["currency"] == product["currency"], (body, order)
        assert [i["unit_price_cents"] for i in order["items"]] == [PRODUCT_PRICE], (body, order)
        async with session.http.get(
            f"/api/v1/orders/{order['id']}", headers=victim.headers
        ) as response:
            await assert_problem(response, 404)  # not placed in the victim's name


async def test_a_catalog_manager_cannot_set_derived_product_fields(session: Session) -> None:
    manager = await session.user("catalog_manager")
    sku = f"SEC-{uuid.uuid4().hex[:10]}"
    forced_id = str(uuid.uuid4())
    body = {
        "sku": sku,
        "name": "Mass",
        "price_cents": 10,
        "stock": 3,
        "id": forced_id,
        "reserved": 1000,
        "created_at": "2000-01-01T00:00:00Z",
    }
    async with session.http.post(
        "/api/v1/products", json=body, headers=manager.headers
    ) as response:
        if response.status == 422:
            await assert_problem(response, 422)
            return
        assert response.status == 201, await response.text()
        product = await response.json()
    assert product["id"] != forced_id
    assert not product["created_at"].startswith("2000")
    async with session.http.get(f"/api/v1/products/{product['id']}/inventory") as response:
        assert (await response.json())["reserved"] == 0
