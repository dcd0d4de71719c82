"""Idempotency-Key on registration (API.md "Conventions")."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from core.testing import assert_problem

REGISTER = "/api/v1/auth/register"


def _body(email: str) -> dict[str, str]:
    return {"email": email, "password": "long-enough-pw", "full_name": "Idem Potent"}


async def _count(db: asyncpg.Connection, email: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email)
    return count


async def test_the_same_key_and_body_replays_the_first_response(
    users_client: TestClient[Any, Any], users_db: asyncpg.Connection
) -> None:
    email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    try:
        first = await users_client.post(REGISTER, json=_body(email), headers=headers)
        second = await users_client.post(REGISTER, json=_body(email), headers=headers)
        assert first.status == second.status == 201
        assert await first.json() == await second.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert await _count(users_db, email) == 1
        # Without the key the same body is a new request: the email is taken.
        third = await users_client.post(REGISTER, json=_body(email))
        await assert_problem(third, 409)
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_the_same_key_with_another_body_is_a_422_and_creates_nothing(
    users_client: TestClient[Any, Any], users_db: asyncpg.Connection
) -> None:
    first_email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    other_email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    try:
        first = await users_client.post(REGISTER, json=_body(first_email), headers=headers)
        assert first.status == 201
        other = await users_client.post(REGISTER, json=_body(other_email), headers=headers)
        body = await assert_problem(other, 422)
        assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
        assert await _count(users_db, other_email) == 0
    finally:
        await users_db.execute(
            "DELETE FROM users WHERE email = ANY($1::text[])", [first_email, other_email]
        )


async def test_concurrent_requests_with_one_key_create_one_user(
    users_client: TestClient[Any, Any], users_db: asyncpg.Connection
) -> None:
    email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    try:
        responses = await asyncio.gather(
            *(users_client.post(REGISTER, json=_body(email), headers=headers) for _ in range(10))
        )
        created = [await r.json() for r in responses if r.status == 201]
        in_flight = [await r.json() for r in responses if r.status == 409]
        # One creates; the others replay it (201, same body) or are told it is still in flight.
        # None may reach the handler and fail on the taken email: that is what the key prevents.
        assert created
        assert len(created) + len(in_flight) == 10
        assert all(body == created[0] for body in created)
        assert all("still being processed" in body["detail"] for body in in_flight), in_flight
        assert await _count(users_db, email) == 1
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)


async def test_an_invalid_key_is_a_422(
    users_client: TestClient[Any, Any], users_db: asyncpg.Connection
) -> None:
    email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    response = await users_client.post(
        REGISTER, json=_body(email), headers={"Idempotency-Key": "x" * 256}
    )
    await assert_problem(response, 422)
    assert await _count(users_db, email) == 0


async def test_a_refusal_is_replayed_too(
    users_client: TestClient[Any, Any], users_db: asyncpg.Connection
) -> None:
    email = f"idem-{uuid.uuid4().hex[:10]}@example.com"
    try:
        assert (await users_client.post(REGISTER, json=_body(email))).status == 201
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        first = await users_client.post(REGISTER, json=_body(email), headers=headers)
        first_body = await assert_problem(first, 409)
        await users_db.execute("DELETE FROM users WHERE email = $1", email)
        # The email is free now, but the key's outcome is settled: the 409 is replayed.
        again = await users_client.post(REGISTER, json=_body(email), headers=headers)
        assert again.status == 409
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await again.json() == first_body
        assert await _count(users_db, email) == 0
    finally:
        await users_db.execute("DELETE FROM users WHERE email = $1", email)
