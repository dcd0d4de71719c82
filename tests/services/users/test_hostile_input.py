"""Input that once reached the database or the JWT decoder raw and came back as a 500."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from core.testing import assert_problem
from tests.conftest import AccountFactory
from tests.services.users.helpers import REGISTER, Client, users_count


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "password": "long-enough-pw", "full_name": "a\u0000b"},
        {"email": "a\u0000b@example.com", "password": "long-enough-pw", "full_name": "A"},
        {"email": "a@example.com", "password": "long\u0000enough-pw", "full_name": "A"},
    ],
)
async def test_nul_characters_in_a_body_are_a_422(
    users_client: Client, users_db: asyncpg.Connection, body: dict[str, str]
) -> None:
    before = await users_count(users_db)
    response = await users_client.post(REGISTER, json=body)
    problem = await assert_problem(response, 422)
    assert any(e["type"] == "string_nul" for e in problem["errors"]), problem
    assert await users_count(users_db) == before


async def test_nul_in_login_is_a_422_not_a_500(users_client: Client) -> None:
    response = await users_client.post(
        "/api/v1/auth/login", json={"email": "x\u0000@example.com", "password": "whatever"}
    )
    await assert_problem(response, 422)


async def test_nul_in_a_query_parameter_is_a_422(
    make_account: AccountFactory, users_client: Client
) -> None:
    admin = await make_account(admin=True)
    response = await users_client.get("/api/v1/users?cursor=%00abc", headers=admin.headers)
    problem = await assert_problem(response, 422)
    assert problem["errors"][0]["loc"] == ["query", "cursor"]


async def test_nul_in_a_profile_patch_changes_nothing(
    make_account: AccountFactory, users_client: Client, users_db: asyncpg.Connection
) -> None:
    account = await make_account()
    response = await users_client.patch(
        "/api/v1/users/me", json={"full_name": "x\u0000y"}, headers=account.headers
    )
    await assert_problem(response, 422)
    name = await users_db.fetchval(
        "SELECT full_name FROM users WHERE id = $1", uuid.UUID(account.id)
    )
    assert name == "Test User"


@pytest.mark.parametrize("token", ["a\udcffb", "abc\u00e9def", "\u2603.\u2603.\u2603"])
async def test_a_non_ascii_bearer_token_is_a_401(users_client: Client, token: str) -> None:
    raw = f"Bearer {token}".encode("utf-8", "surrogateescape")
    response = await users_client.get(
        "/api/v1/users/me", headers={"Authorization": raw.decode("latin-1")}
    )
    await assert_problem(response, 401)
