"""Per-account login throttling (exponential delay, no lock-out) and token responses' caching."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from core.testing import assert_problem
from services.users.throttle import LoginThrottle, LoginThrottled
from tests.conftest import AccountFactory

Client = TestClient[Any, Any]
CLIENT = "192.0.2.1"


@pytest.fixture
async def redis(redis_namespace: str) -> Any:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


async def test_the_delay_doubles_after_the_free_attempts_and_is_capped(
    redis: Redis, redis_namespace: str
) -> None:
    throttle = LoginThrottle(
        redis,
        namespace=f"{redis_namespace}:{uuid.uuid4().hex[:6]}",
        free_attempts=3,
        base_delay=2.0,
        max_delay=10.0,
    )
    email, now = "victim@example.com", 1_000_000.0
    for _ in range(3):
        await throttle.attempt(email, CLIENT, now=now)  # free
    # From now on each attempt waits base * 2**(n - free) after the previous one: 2 s...
    with pytest.raises(LoginThrottled) as exc:
        await throttle.attempt(email, CLIENT, now=now + 0.5)
    assert exc.value.retry_after == 2
    assert exc.value.headers["Retry-After"] == "2"
    await throttle.attempt(email, CLIENT, now=now + 2)
    # ...then 4 s...
    with pytest.raises(LoginThrottled):
        await throttle.attempt(email, CLIENT, now=now + 5)
    await throttle.attempt(email, CLIENT, now=now + 6)
    # ...then 8 s...
    with pytest.raises(LoginThrottled):
        await throttle.attempt(email, CLIENT, now=now + 13)
    await throttle.attempt(email, CLIENT, now=now + 14)
    # ...and never more than max_delay, however many attempts: the owner is not locked out.
    later = now + 14
    for _ in range(5):
        with pytest.raises(LoginThrottled):
            await throttle.attempt(email, CLIENT, now=later + 9.5)
        later += 10
        await throttle.attempt(email, CLIENT, now=later)
    # Other accounts are not affected, and success starts afresh.
    await throttle.attempt("someone-else@example.com", CLIENT, now=later)
    await throttle.succeeded(email, CLIENT)
    await throttle.attempt(email, CLIENT, now=later + 0.1)


async def test_a_guesser_elsewhere_does_not_delay_the_owner_until_the_account_ceiling(
    redis: Redis, redis_namespace: str
) -> None:
    throttle = LoginThrottle(
        redis,
        namespace=f"{redis_namespace}:{uuid.uuid4().hex[:6]}",
        free_attempts=3,
        account_free_attempts=8,
        base_delay=2.0,
        max_delay=10.0,
    )
    email, now = "owner@example.com", 1_000_000.0
    for _ in range(3):
        await throttle.attempt(email, "198.51.100.7", now=now)
    with pytest.raises(LoginThrottled):
        await throttle.attempt(email, "198.51.100.7", now=now)
    # The owner, from their own address, is not slowed by the guesser's failures...
    await throttle.attempt(email, "203.0.113.5", now=now)
    # ...until the account as a whole passes its ceiling (8 attempts in the window), whoever
    # makes them: then everyone waits, at most max_delay.
    for i in range(4):
        await throttle.attempt(email, f"198.51.100.{20 + i}", now=now)
    with pytest.raises(LoginThrottled) as exc:
        await throttle.attempt(email, "203.0.113.5", now=now)
    assert exc.value.retry_after == 2
    await throttle.attempt(email, "203.0.113.5", now=now + 2)


async def test_a_parallel_burst_gets_only_the_free_attempts(
    redis: Redis, redis_namespace: str
) -> None:
    throttle = LoginThrottle(redis, namespace=f"{redis_namespace}:{uuid.uuid4().hex[:6]}")
    results = await asyncio.gather(
        *(throttle.attempt("burst@example.com", CLIENT) for _ in range(50)), return_exceptions=True
    )
    passed = [r for r in results if r is None]
    assert len(passed) == 5  # the free attempts; the rest must wait
    assert all(isinstance(r, LoginThrottled) for r in results if r is not None)


async def test_guessing_one_account_is_throttled_but_its_owner_gets_in_later(
    make_account: AccountFactory, users_client: Client
) -> None:
    account = await make_account()
    wrong = {"email": account.email, "password": "not the password"}
    statuses = [
        (await users_client.post("/api/v1/auth/login", json=wrong)).status for _ in range(8)
    ]
    assert statuses == [401] * 5 + [429] * 3
    resp = await users_client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    problem = await assert_problem(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1
    assert "login attempts" in problem["detail"]
    assert "access_token" not in problem

    # Upper-case and surrounding spaces name the same account.
    resp = await users_client.post(
        "/api/v1/auth/login", json={**wrong, "email": f"  {account.email.upper()} "}
    )
    assert resp.status == 429


async def test_token_responses_are_never_cached(
    make_account: AccountFactory, users_client: Client
) -> None:
    account = await make_account()
    login = await users_client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert login.status == 200
    assert login.headers["Cache-Control"] == "no-store"
    refresh = await users_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": (await login.json())["refresh_token"]}
    )
    assert refresh.status == 200
    assert refresh.headers["Cache-Control"] == "no-store"
    me = await users_client.get("/api/v1/users/me", headers=account.headers)
    assert me.headers["Cache-Control"] == "no-store"
