"""Helpers of the users service tests: requests, tokens and what the database holds."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import jwt
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from core.testing import assert_problem

Client = TestClient[Any, Any]

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/users/me"
USERS = "/api/v1/users"

USER_FIELDS = {"id", "email", "full_name", "roles", "created_at"}
TOKEN_FIELDS = {"access_token", "refresh_token", "token_type", "expires_in"}


def unique_email(prefix: str = "user", domain: str = "example.com") -> str:
    """An email no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}@{domain}"


def bearer(access_token: str) -> dict[str, str]:
    """The Authorization header for ``access_token``."""
    return {"Authorization": f"Bearer {access_token}"}


def roles_path(user_id: str) -> str:
    """The URL of a user's roles."""
    return f"{USERS}/{user_id}/roles"


def claims(token: str) -> dict[str, Any]:
    """The claims of a token, read without verifying it (to inspect what the server issued)."""
    return jwt.decode(token, options={"verify_signature": False})


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWT segments are encoded."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def login(client: Client, email: str, password: str) -> ClientResponse:
    """POST credentials to the login route."""
    return await client.post(LOGIN, json={"email": email, "password": password})


async def login_tokens(client: Client, email: str, password: str) -> dict[str, Any]:
    """Log in (which must succeed) and return the token pair."""
    resp = await login(client, email, password)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def refresh(client: Client, refresh_token: str) -> ClientResponse:
    """POST a refresh token to the refresh route."""
    return await client.post(REFRESH, json={"refresh_token": refresh_token})


async def assert_unauthorized(resp: ClientResponse) -> dict[str, Any]:
    """A 401 problem carrying the Bearer challenge."""
    body = await assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer"), resp.headers
    return body


async def assert_rejected(client: Client, access_token: str) -> None:
    """The access token no longer opens the caller's profile."""
    await assert_unauthorized(await client.get(ME, headers=bearer(access_token)))


async def assert_accepted(client: Client, access_token: str, user_id: str) -> None:
    """The access token opens the profile of ``user_id``."""
    resp = await client.get(ME, headers=bearer(access_token))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == user_id


# What the database holds --------------------------------------------------------------------


async def users_count(db: asyncpg.Connection) -> int:
    """How many users exist."""
    return int(await db.fetchval("SELECT count(*) FROM users"))


async def user_by_email(db: asyncpg.Connection, email: str) -> dict[str, Any] | None:
    """The stored row of the user with exactly this email."""
    row = await db.fetchrow("SELECT * FROM users WHERE email = $1", email)
    return dict(row) if row is not None else None


async def user_by_id(db: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    """The stored row of an existing user."""
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user_id))
    assert row is not None, user_id
    return dict(row)


async def refresh_rows(db: asyncpg.Connection, user_id: str) -> list[dict[str, Any]]:
    """Every stored refresh token of a user (revoked_at: its family's), in a stable order."""
    rows = await db.fetch(
        """
        SELECT t.jti, t.family_id, t.user_id, t.issued_at, t.expires_at, t.used_at,
               f.revoked_at
          FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.user_id = $1
         ORDER BY t.issued_at, t.jti
        """,
        uuid.UUID(user_id),
    )
    return [dict(row) for row in rows]


async def user_state(db: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    """Everything stored about a user: compare before and after to prove nothing changed."""
    return {
        "user": await user_by_id(db, user_id),
        "refresh_tokens": await refresh_rows(db, user_id),
    }


async def all_users_state(db: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every user row and the number of refresh tokens, for requests that must touch nothing."""
    rows = await db.fetch("SELECT * FROM users ORDER BY id")
    tokens = await db.fetchval("SELECT count(*) FROM refresh_tokens")
    return [*(dict(row) for row in rows), {"refresh_tokens": tokens}]
