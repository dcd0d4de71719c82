"""Roles are named sets of permissions; routes require permissions (API.md "Conventions")."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.testing import assert_problem
from services.users.roles import PERMISSIONS, ROLE_PERMISSIONS, Role, permissions_of
from tests.conftest import AccountFactory

Client = TestClient[Any, Any]

EXPECTED = {
    "customer": [],
    "admin": sorted(PERMISSIONS),
    "catalog_manager": ["catalog:write", "inventory:write"],
    "support": ["orders:cancel_any", "orders:read_all", "users:read"],
    "fulfillment": ["orders:read_all", "orders:ship"],
}


def test_the_role_table_is_the_contracts() -> None:
    assert {str(role): sorted(ROLE_PERMISSIONS[role]) for role in Role} == EXPECTED
    assert {
        "users:read",
        "users:manage",
        "catalog:write",
        "inventory:write",
        "orders:read_all",
        "orders:ship",
        "orders:cancel_any",
        "metrics:read",
    } == PERMISSIONS
    assert permissions_of(["support", "fulfillment"]) == {
        "users:read",
        "orders:read_all",
        "orders:cancel_any",
        "orders:ship",
    }
    assert permissions_of(["no-such-role"]) == frozenset()


async def _login(client: Client, email: str, password: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert resp.status == 200, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['access_token']}"}


async def test_me_lists_the_permissions_of_the_callers_roles(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    me = await (await users_client.get("/api/v1/users/me", headers=account.headers)).json()
    assert me["roles"] == ["customer"]
    assert me["permissions"] == []

    await users_db.execute(
        "UPDATE users SET roles = ARRAY['support'] WHERE id = $1", uuid.UUID(account.id)
    )
    headers = await _login(users_client, account.email, account.password)
    me = await (await users_client.get("/api/v1/users/me", headers=headers)).json()
    assert me["permissions"] == EXPECTED["support"]


@pytest.mark.parametrize(
    ("role", "status"),
    [("support", 200), ("admin", 200), ("customer", 403), ("fulfillment", 403)],
)
async def test_roles_are_listed_to_holders_of_users_read(
    make_account: AccountFactory,
    users_client: Client,
    users_db: asyncpg.Connection,
    role: str,
    status: int,
) -> None:
    account = await make_account()
    await users_db.execute(
        "UPDATE users SET roles = ARRAY[$2] WHERE id = $1", uuid.UUID(account.id), role
    )
    headers = await _login(users_client, account.email, account.password)
    resp = await users_client.get("/api/v1/roles", headers=headers)
    if status == 403:
        problem = await assert_problem(resp, 403)
        assert "users:read" in problem["detail"]
        return
    assert resp.status == 200
    body = await resp.json()
    assert {item["name"]: item["permissions"] for item in body["items"]} == EXPECTED


async def test_roles_need_authentication(users_client: Client) -> None:
    await assert_problem(await users_client.get("/api/v1/roles"), 401)


async def test_support_may_read_users_but_not_set_roles(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    staff = await make_account()
    other = await make_account()
    await users_db.execute(
        "UPDATE users SET roles = ARRAY['support'] WHERE id = $1", uuid.UUID(staff.id)
    )
    headers = await _login(users_client, staff.email, staff.password)
    assert (await users_client.get("/api/v1/users", headers=headers)).status == 200
    resp = await users_client.put(
        f"/api/v1/users/{other.id}/roles", json={"roles": ["admin"]}, headers=headers
    )
    problem = await assert_problem(resp, 403)
    assert "users:manage" in problem["detail"]
    roles = await users_db.fetchval("SELECT roles FROM users WHERE id = $1", uuid.UUID(other.id))
    assert roles == ["customer"]


@pytest.mark.parametrize("role", [str(role) for role in Role])
async def test_any_role_can_be_granted_and_takes_effect_at_once(
    make_account: AccountFactory, users_client: Client, role: str
) -> None:
    admin = await make_account(admin=True)
    user = await make_account()
    path = f"/api/v1/users/{user.id}/roles"
    before = "support" if role != "support" else "customer"
    resp = await users_client.put(path, json={"roles": [before]}, headers=admin.headers)
    assert resp.status == 200, await resp.text()
    old_session = await _login(users_client, user.email, user.password)

    resp = await users_client.put(path, json={"roles": [role]}, headers=admin.headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["roles"] == [role]
    # Tokens issued before the change stop working at once...
    await assert_problem(await users_client.get("/api/v1/users/me", headers=old_session), 401)
    # ...and a new session carries the new role's permissions.
    headers = await _login(users_client, user.email, user.password)
    me = await (await users_client.get("/api/v1/users/me", headers=headers)).json()
    assert me["roles"] == [role]
    assert me["permissions"] == EXPECTED[role]
