"""core.auth.revocation against the real Redis (keys isolated in this test's namespace)."""

import time
from typing import Any

import pytest
from redis.asyncio import Redis

import core
from core import Router, ServiceUnavailable, Unauthorized
from core.auth import Principal, RevocationStore, TokenCodec
from core.redis import create_redis
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import CLOSED_REDIS_URL, REDIS_URL, ClientFactory, SettingsFactory


@pytest.fixture
def store(redis: Redis, namespace: str, settings: BaseServiceSettings) -> RevocationStore:
    return RevocationStore(redis, namespace=namespace, access_ttl=settings.access_token_ttl)


def _principal(
    signer: TokenCodec, *, user_id: str = "u1", family: str = "f1", now: int | None = None
) -> Principal:
    issued = signer.issue("access", user_id=user_id, roles=["customer"], family=family, now=now)
    return signer.principal(issued.token)


async def test_a_fresh_token_is_active(store: RevocationStore, signer: TokenCodec) -> None:
    await store.ensure_active(_principal(signer))


async def test_revoke_family(store: RevocationStore, signer: TokenCodec) -> None:
    first = _principal(signer, family="fam-a")
    second = _principal(signer, family="fam-a")
    other = _principal(signer, family="fam-b")
    await store.revoke_family("fam-a")
    for principal in (first, second):
        with pytest.raises(Unauthorized, match="revoked"):
            await store.ensure_active(principal)
    await store.ensure_active(other)


async def test_revoke_token(store: RevocationStore, signer: TokenCodec) -> None:
    revoked = _principal(signer)
    sibling = _principal(signer)  # same user, same family, another jti
    await store.revoke_token(revoked.jti)
    with pytest.raises(Unauthorized, match="revoked"):
        await store.ensure_active(revoked)
    await store.ensure_active(sibling)


async def test_revoke_user_tokens_refuses_only_earlier_tokens(
    store: RevocationStore, signer: TokenCodec
) -> None:
    cutoff = int(time.time())
    before = _principal(signer, user_id="alice", family="f-old", now=cutoff - 10)
    at_cutoff = _principal(signer, user_id="alice", family="f-now", now=cutoff)
    after = _principal(signer, user_id="alice", family="f-new", now=cutoff + 5)
    someone_else = _principal(signer, user_id="bob", now=cutoff - 10)

    await store.revoke_user_tokens("alice", now=cutoff)

    with pytest.raises(Unauthorized, match="revoked"):
        await store.ensure_active(before)
    await store.ensure_active(at_cutoff)
    await store.ensure_active(after)
    await store.ensure_active(someone_else)


async def test_revocations_expire_with_the_access_tokens(
    store: RevocationStore, redis: Redis, namespace: str, settings: BaseServiceSettings
) -> None:
    await store.revoke_family("fam")
    await store.revoke_token("jti")
    await store.revoke_user_tokens("user")
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    assert len(keys) == 3
    for key in keys:
        ttl = await redis.ttl(key)
        assert settings.access_token_ttl <= ttl <= settings.access_token_ttl + 60, (key, ttl)


async def test_namespaces_do_not_see_each_other(
    redis: Redis, namespace: str, signer: TokenCodec
) -> None:
    mine = RevocationStore(redis, namespace=namespace, access_ttl=900)
    theirs = RevocationStore(redis, namespace=f"{namespace}:other", access_ttl=900)
    principal = _principal(signer, family="shared-family")
    await theirs.revoke_family("shared-family")
    await mine.ensure_active(principal)
    with pytest.raises(Unauthorized):
        await theirs.ensure_active(principal)


async def test_an_unreachable_redis_fails_closed(signer: TokenCodec) -> None:
    client = create_redis(CLOSED_REDIS_URL)
    try:
        store = RevocationStore(client, namespace="unreachable", access_ttl=900)
        with pytest.raises(ServiceUnavailable) as info:
            await store.ensure_active(_principal(signer))
        assert info.value.status == 503
        assert "127.0.0.1" not in info.value.detail
    finally:
        await client.aclose()


async def _auth_app(service_client: ClientFactory, settings: BaseServiceSettings) -> Any:
    router = Router()

    @router.get("/me", auth=True)
    async def me(caller: Principal) -> dict[str, str]:
        return {"user_id": caller.user_id}

    app = core.create_app(
        "t",
        settings,
        routers=[router],
        resources=[core.redis_ctx(settings.redis_url), core.auth_ctx(settings)],
    )
    return await service_client(app)


async def test_a_revoked_token_is_refused_by_the_app(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    signer: TokenCodec,
    redis: Redis,
) -> None:
    assert settings.redis_url == REDIS_URL
    client = await _auth_app(service_client, settings)
    issued = signer.issue("access", user_id="u1", roles=["customer"], family="fam-x")
    headers = {"Authorization": f"Bearer {issued.token}"}
    resp = await client.get("/me", headers=headers)
    assert resp.status == 200
    assert await resp.json() == {"user_id": "u1"}

    # The app's store uses the namespace from its settings.
    store = RevocationStore(
        redis, namespace=settings.redis_namespace, access_ttl=settings.access_token_ttl
    )
    await store.revoke_family("fam-x")
    resp = await client.get("/me", headers=headers)
    body = await assert_problem(resp, 401)
    assert body["detail"] == "The token has been revoked"


async def test_the_app_answers_503_when_revocations_cannot_be_checked(
    service_client: ClientFactory, make_settings: SettingsFactory, signer: TokenCodec
) -> None:
    settings = make_settings(redis_url=CLOSED_REDIS_URL)
    client = await _auth_app(service_client, settings)
    token = signer.issue("access", user_id="u1", roles=["customer"], family="f").token
    resp = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    await assert_problem(resp, 503)
