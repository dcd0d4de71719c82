"""Rate limits in Redis (GCRA): strict on login, per user or per IP, headers, fail-open."""

from __future__ import annotations

import asyncio
import uuid

from core import BaseServiceSettings, token_codec
from core.testing import assert_problem
from tests.gateway.conftest import FakeFactory, GatewayFactory, UsersProcess, metric

LOGIN = "/api/v1/auth/login"


async def test_the_eleventh_login_in_a_minute_gets_429(
    users_upstream: UsersProcess, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(upstream_users=users_upstream.url)
    email, password = f"rl-{uuid.uuid4().hex[:10]}@example.com", "correct horse battery"
    register = await gateway.post(
        "/api/v1/auth/register", json={"email": email, "password": password, "full_name": "R"}
    )
    assert register.status == 201, await register.text()
    credentials = {"email": email, "password": password}
    for attempt in range(10):
        response = await gateway.post(LOGIN, json=credentials)
        assert response.status == 200, await response.text()
        assert response.headers["RateLimit-Limit"] == "10"
        assert response.headers["RateLimit-Remaining"] == str(9 - attempt)
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 60
        assert response.headers["RateLimit-Policy"] == "10;w=60"
        assert "Retry-After" not in response.headers
    refused = await gateway.post(LOGIN, json=credentials)
    body = await assert_problem(refused, 429)
    assert body["title"] == "Too Many Requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 6  # one login every 6 s refills
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert refused.headers["RateLimit-Limit"] == "10"
    assert int(refused.headers["RateLimit-Reset"]) >= int(refused.headers["Retry-After"])
    # Wrong passwords count the same; other routes have their own budget.
    await assert_problem(await gateway.post(LOGIN, json={**credentials, "password": "x" * 9}), 429)
    me = await gateway.get("/api/v1/users/me")
    await assert_problem(me, 401)
    assert me.headers["RateLimit-Limit"] == "600"
    assert await metric(gateway, "gateway_ratelimit_decisions_total", result="limited") == 2


async def test_limits_are_per_user_when_signed_in_and_per_ip_otherwise(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = await fake_upstream("p")
    gateway = await make_gateway(upstream_products=fake.url, rate_limit_default="3/60")
    signer = token_codec(BaseServiceSettings(_env_file=None, env="test"), signing=True)  # type: ignore[call-arg]

    def bearer(user: str) -> dict[str, str]:
        token = signer.issue("access", user_id=user, roles=["customer"], family=user).token
        return {"Authorization": f"Bearer {token}"}

    alice, bob = bearer(f"alice-{uuid.uuid4()}"), bearer(f"bob-{uuid.uuid4()}")
    for _ in range(3):
        assert (await gateway.get("/api/v1/products/1", headers=alice)).status == 200
    await assert_problem(await gateway.get("/api/v1/products/1", headers=alice), 429)
    assert (await gateway.get("/api/v1/products/1", headers=bob)).status == 200
    assert (await gateway.get("/api/v1/products/1")).status == 200  # anonymous: by IP
    # Health probes and metrics are never limited.
    for _ in range(5):
        response = await gateway.get("/healthz")
        assert response.status == 200
        assert "RateLimit-Limit" not in response.headers


async def test_concurrent_requests_never_exceed_the_limit(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = await fake_upstream("p")
    # What is checked is the counting, not the fail-open timeout (tested on its own below): 60
    # requests at once on a busy 2-core CI machine may wait on Redis past the 0.25 s default,
    # and a limiter that fails open lets them all through (seen once in CI: 60 of 60).
    gateway = await make_gateway(
        upstream_products=fake.url, rate_limit_default="25/60", rate_limit_timeout=5
    )
    responses = await asyncio.gather(*(gateway.get("/api/v1/products/1") for _ in range(60)))
    statuses = sorted(response.status for response in responses)
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35


async def test_a_limit_too_high_to_reach_still_counts_and_never_fails(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = await fake_upstream("p")
    gateway = await make_gateway(upstream_products=fake.url, rate_limit_default="999999999/60")
    for _ in range(20):
        response = await gateway.get("/api/v1/products/1")
        assert response.status == 200
        assert response.headers["RateLimit-Limit"] == "999999999"
    assert await metric(gateway, "gateway_ratelimit_failopen_total") == 0
    assert await metric(gateway, "gateway_ratelimit_decisions_total", result="allowed") == 20


async def test_redis_down_fails_open_and_is_counted(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = await fake_upstream("p")
    gateway = await make_gateway(
        upstream_products=fake.url,
        redis_url="redis://127.0.0.1:1/0",
        rate_limit_default="1/60",
        rate_limit_cooldown=0,
    )
    for _ in range(5):
        response = await gateway.get("/api/v1/products/1")
        assert response.status == 200
        # API.md: the headers are on every response; failing open counts nothing.
        assert response.headers["RateLimit-Limit"] == "1"
        assert response.headers["RateLimit-Remaining"] == "1"
        assert response.headers["RateLimit-Reset"] == "0"
    assert await metric(gateway, "gateway_ratelimit_failopen_total", reason="unreachable") == 5
    ready = await gateway.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["redis"]["status"] == "down"


async def test_a_dead_redis_is_left_alone_during_the_cooldown(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = await fake_upstream("p")
    gateway = await make_gateway(
        upstream_products=fake.url, redis_url="redis://127.0.0.1:1/0", rate_limit_cooldown=60
    )
    for _ in range(4):
        assert (await gateway.get("/api/v1/products/1")).status == 200
    assert await metric(gateway, "gateway_ratelimit_failopen_total", reason="unreachable") == 1
    assert await metric(gateway, "gateway_ratelimit_failopen_total", reason="cooldown") == 3
