"""Authentication at the edge: bad tokens stop at the gateway, identity travels in headers."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core import BaseServiceSettings, token_codec
from core.auth import RevocationStore, TokenCodec
from core.testing import assert_problem
from gateway.auth import verify_identity
from tests.gateway.conftest import Client, FakeFactory, FakeUpstream, GatewayFactory, metric

ORDERS = "/api/v1/orders"  # protected: every method needs a token
SECRET = "gateway-identity-secret"


@pytest.fixture
def signer() -> TokenCodec:
    return token_codec(BaseServiceSettings(_env_file=None, env="test"), signing=True)  # type: ignore[call-arg]


@pytest.fixture
async def revocations(redis_namespace: str) -> AsyncIterator[RevocationStore]:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    yield RevocationStore(client, namespace=redis_namespace, access_ttl=900)
    await client.aclose()


@pytest.fixture
async def fake(fake_upstream: FakeFactory) -> FakeUpstream:
    return await fake_upstream("orders")


@pytest.fixture
async def gateway(fake: FakeUpstream, make_gateway: GatewayFactory) -> Client:
    return await make_gateway(
        upstream_orders=fake.url, upstream_products=fake.url, identity_secret=SECRET
    )


def _token(signer: TokenCodec, *, roles: tuple[str, ...] = ("customer",), **kwargs: float) -> str:
    user = str(uuid.uuid4())
    return signer.issue(
        "access", user_id=user, roles=roles, family=str(uuid.uuid4()), **kwargs
    ).token


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_a_valid_token_passes_with_the_identity_headers(
    gateway: Client, fake: FakeUpstream, signer: TokenCodec
) -> None:
    issued = signer.issue("access", user_id="user-1", roles=["customer", "admin"], family="f1")
    response = await gateway.get(
        ORDERS,
        headers={
            "Authorization": f"Bearer {issued.token}",
            "X-Authenticated-User": "someone-else",
            "X-Authenticated-Roles": "root",
        },
    )
    assert response.status == 200, await response.text()
    headers = (await response.json())["headers"]
    assert headers["x-authenticated-user"] == ["user-1"]  # the client's spoof was replaced
    assert headers["x-authenticated-roles"] == ["admin,customer"]
    assert headers["authorization"] == [f"Bearer {issued.token}"]  # upstreams verify it too
    single = {name: values[0] for name, values in headers.items()}
    assert verify_identity({k.title(): v for k, v in single.items()}, secret=SECRET.encode()) == (
        "user-1",
        frozenset({"admin", "customer"}),
    )


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "tampered", "alg-none", "expired", "refresh"]
)
async def test_bad_tokens_are_refused_at_the_gateway(
    gateway: Client, fake: FakeUpstream, signer: TokenCodec, case: str
) -> None:
    good = _token(signer)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tokens = {
        "garbage": "not-a-jwt",
        "tampered": f"{header}.{_b64({**claims, 'roles': ['admin']})}.{signature}",
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "expired": _token(signer, now=time.time() - 3600),
        "refresh": signer.issue("refresh", user_id="u", roles=[], family="f").token,
    }
    headers = {"Authorization": f"Bearer {tokens[case]}"} if case in tokens else {}
    for method in ("GET", "POST"):
        response = await gateway.request(method, ORDERS, headers=headers, json={})
        body = await assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "RateLimit-Remaining" in response.headers
        if case == "expired":
            assert "expired" in body["detail"]
    assert await fake.seen() == []  # nothing reached the upstream
    reason = {"missing": "missing", "expired": "expired"}.get(case, "invalid")
    assert await metric(gateway, "gateway_auth_rejections_total", reason=reason) == 2


async def test_a_revoked_token_is_refused_at_the_gateway(
    gateway: Client, fake: FakeUpstream, signer: TokenCodec, revocations: RevocationStore
) -> None:
    token = _token(signer)
    auth = {"Authorization": f"Bearer {token}"}
    assert (await gateway.get(ORDERS, headers=auth)).status == 200
    claims = signer.decode(token, typ="access")
    await revocations.revoke_token(claims["jti"])
    body = await assert_problem(await gateway.get(ORDERS, headers=auth), 401)
    assert "revoked" in body["detail"]
    assert len(await fake.seen()) == 1
    assert await metric(gateway, "gateway_auth_rejections_total", reason="revoked") == 1


async def test_public_routes_let_anonymous_and_bad_tokens_through_without_identity(
    gateway: Client, fake: FakeUpstream, signer: TokenCodec, revocations: RevocationStore
) -> None:
    revoked = _token(signer)
    await revocations.revoke_family(signer.decode(revoked, typ="access")["fam"])
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {revoked}"},
        {"X-Authenticated-User": "spoofed", "X-Authenticated-Signature": "00"},
    ):
        response = await gateway.get("/api/v1/products/1", headers=headers)
        assert response.status == 200, await response.text()
        forwarded = (await response.json())["headers"]
        assert not [name for name in forwarded if name.startswith("x-authenticated-")]
    valid = await gateway.get(
        "/api/v1/products/1", headers={"Authorization": f"Bearer {_token(signer)}"}
    )
    assert "x-authenticated-user" in (await valid.json())["headers"]


async def test_revocation_fails_closed_when_redis_is_down(
    fake: FakeUpstream, make_gateway: GatewayFactory, signer: TokenCodec
) -> None:
    gateway = await make_gateway(
        upstream_orders=fake.url, upstream_products=fake.url, redis_url="redis://127.0.0.1:1/0"
    )
    auth = {"Authorization": f"Bearer {_token(signer)}"}
    response = await gateway.get(ORDERS, headers=auth)
    await assert_problem(response, 503)
    assert await fake.seen() == []
    # On a public route the caller is just anonymous.
    public = await gateway.get("/api/v1/products/1", headers=auth)
    assert public.status == 200
    assert "x-authenticated-user" not in (await public.json())["headers"]


async def test_metrics_leave_the_machine_only_with_metrics_read(
    make_gateway: GatewayFactory, signer: TokenCodec
) -> None:
    """The gateway's port is public: its /metrics (traffic by route and instance, breaker
    states) go to the allowed scrapers (this machine by default), or to metrics:read."""
    local = await make_gateway()
    assert (await local.get("/metrics")).status == 200  # the test client is on loopback

    remote = await make_gateway(metrics_allow=[])  # as seen from any other address
    await assert_problem(await remote.get("/metrics"), 401)
    customer = _token(signer)
    resp = await remote.get("/metrics", headers={"Authorization": f"Bearer {customer}"})
    problem = await assert_problem(resp, 403)
    assert "metrics:read" in problem["detail"]
    operator = signer.issue(
        "access", user_id="ops", roles=["admin"], permissions=["metrics:read"], family="f"
    ).token
    resp = await remote.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert resp.status == 200
    assert "# TYPE process_resident_memory_bytes gauge" in await resp.text()
