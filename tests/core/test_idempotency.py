"""core.idempotency through a real app and Redis: what a replay gives back."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

import core
from core import Body, Router
from core.errors import Conflict
from core.handlers import json_response
from core.idempotency import IdempotencyKeysExhausted, IdempotencyStore, ResponseTooLargeToReplay
from core.schemas import InputModel
from core.settings import BaseServiceSettings
from tests.core.conftest import REDIS_URL, ClientFactory

_JSON = {"Content-Type": "application/json"}


class Thing(InputModel):
    name: str


async def test_a_replay_gives_the_first_status_body_and_headers(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()
    made: list[str] = []

    @router.post("/things", status=201, idempotent=True)
    async def create(thing: Annotated[Thing, Body()]) -> web.Response:
        thing_id = str(uuid.uuid4())
        made.append(thing_id)
        headers = {"Location": f"/things/{thing_id}", "ETag": f'"{len(made)}"'}
        return json_response(b'{"id": "%s"}' % thing_id.encode(), 201, headers)

    app = core.create_app("t", settings, routers=[router], resources=[core.redis_ctx(REDIS_URL)])
    client = await service_client(app)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/things", json={"name": "a"}, headers=key)
    second = await client.post(
        "/things", json={"name": "a"}, headers={**key, "X-Correlation-ID": "the-second"}
    )
    assert first.status == second.status == 201
    assert len(made) == 1
    body: dict[str, Any] = await first.json()
    assert await second.json() == body
    assert second.headers["Location"] == first.headers["Location"] == f"/things/{body['id']}"
    assert second.headers["ETag"] == '"1"'
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["X-Correlation-ID"] == "the-second"  # the replay's own request
    assert second.headers.getall("Content-Type") == first.headers.getall("Content-Type")


def _app_with_counter(
    settings: BaseServiceSettings, made: list[str], *, conflict: bool = False
) -> web.Application:
    router = Router()

    @router.post("/things", status=201, idempotent=True)
    async def create(thing: Annotated[Thing, Body()]) -> web.Response:
        made.append(thing.name)
        if conflict:
            raise Conflict("That name is taken")
        return json_response(orjson.dumps({"n": len(made)}), 201)

    return core.create_app("t", settings, routers=[router], resources=[core.redis_ctx(REDIS_URL)])


async def _idempotency_keys(redis: Redis, namespace: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{namespace}:idem:*")]


async def test_a_request_refused_by_validation_records_nothing_and_the_key_can_be_retried(
    service_client: ClientFactory, settings: BaseServiceSettings, redis: Redis, namespace: str
) -> None:
    made: list[str] = []
    client = await service_client(_app_with_counter(settings, made))
    key = {"Idempotency-Key": uuid.uuid4().hex}

    refused = await client.post("/things", json={"name": 5}, headers=key)
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["loc"] == ["body", "name"]
    not_json = await client.post("/things", data=b"{", headers={**key, **_JSON})
    assert not_json.status == 400
    wrong_type = await client.post("/things", data=b"name=a", headers=key)
    assert wrong_type.status == 415
    assert made == []
    assert await _idempotency_keys(redis, namespace) == []

    fixed = await client.post("/things", json={"name": "a"}, headers=key)
    assert fixed.status == 201, await fixed.text()
    again = await client.post("/things", json={"name": "a"}, headers=key)
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert made == ["a"]


async def test_a_4xx_of_the_business_logic_is_recorded_and_replayed(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    made: list[str] = []
    client = await service_client(_app_with_counter(settings, made, conflict=True))
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/things", json={"name": "a"}, headers=key)
    second = await client.post("/things", json={"name": "a"}, headers=key)
    assert first.status == second.status == 409
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.content_type == "application/problem+json"
    assert made == ["a"]


async def test_anonymous_clients_behind_a_trusted_proxy_have_keys_of_their_own(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    """Behind the gateway every anonymous caller arrives from its address: the key's scope is
    the client that X-Forwarded-For names, when the proxy is trusted, and the peer otherwise."""
    made: list[str] = []
    trusting = settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32", "::1/128"]})
    client = await service_client(_app_with_counter(trusting, made))
    key = uuid.uuid4().hex

    def sent_by(address: str) -> dict[str, str]:
        return {"Idempotency-Key": key, "X-Forwarded-For": address}

    first = await client.post("/things", json={"name": "a"}, headers=sent_by("198.51.100.1"))
    other = await client.post("/things", json={"name": "b"}, headers=sent_by("198.51.100.2"))
    again = await client.post("/things", json={"name": "a"}, headers=sent_by("198.51.100.1"))
    assert (first.status, other.status, again.status) == (201, 201, 201)
    assert "Idempotent-Replayed" not in other.headers  # another client's key, not a replay
    assert again.headers["Idempotent-Replayed"] == "true"
    assert made == ["a", "b"]

    # Not trusted: X-Forwarded-For is the client's word and proves nothing; one peer, one scope.
    made.clear()
    plain = await service_client(_app_with_counter(settings, made))
    key = uuid.uuid4().hex
    first = await plain.post("/things", json={"name": "a"}, headers=sent_by("198.51.100.1"))
    spoofed = await plain.post("/things", json={"name": "c"}, headers=sent_by("198.51.100.9"))
    assert first.status == 201
    assert spoofed.status == 422  # same key, another body: the same (peer's) scope
    assert made == ["a"]


def _created(body: bytes, status: int = 201) -> Callable[[], Awaitable[web.StreamResponse]]:
    async def call() -> web.StreamResponse:
        return json_response(body, status, {"Location": "/things/1"})

    return call


async def test_a_caller_holds_a_bounded_number_of_live_keys(redis: Redis, namespace: str) -> None:
    store = IdempotencyStore(redis, namespace=namespace, ttl=600, max_keys=2)
    other = "t:create:someone-else"
    for key in ("k1", "k2"):
        response = await store.run(
            scope="t:create:u1", key=key, fingerprint="f", call=_created(b"{}")
        )
        assert response.status == 201
    with pytest.raises(IdempotencyKeysExhausted) as refused:
        await store.run(scope="t:create:u1", key="k3", fingerprint="f", call=_created(b"{}"))
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 600
    # Repeats of a live key are still answered, and other callers have their own quota.
    replay = await store.run(scope="t:create:u1", key="k1", fingerprint="f", call=_created(b"{}"))
    assert replay.headers["Idempotent-Replayed"] == "true"
    fresh = await store.run(scope=other, key="k3", fingerprint="f", call=_created(b"{}"))
    assert fresh.status == 201

    async def fails() -> web.StreamResponse:
        return web.Response(status=503)

    # A released key (5xx) frees its slot.
    small = IdempotencyStore(redis, namespace=namespace, ttl=600, max_keys=1)
    assert (await small.run(scope="t:x:u2", key="a", fingerprint="f", call=fails)).status == 503
    assert (
        await small.run(scope="t:x:u2", key="b", fingerprint="f", call=_created(b"{}"))
    ).status == 201


async def test_a_response_too_large_to_keep_is_never_run_again(
    redis: Redis, namespace: str
) -> None:
    store = IdempotencyStore(redis, namespace=namespace, max_record_bytes=1024)
    body = orjson.dumps({"blob": "x" * 5000})
    calls: list[int] = []

    async def create() -> web.StreamResponse:
        calls.append(1)
        return json_response(body, 201, {"Location": "/things/1"})

    first = await store.run(scope="t:c:u", key="big", fingerprint="f", call=create)
    assert first.status == 201
    with pytest.raises(ResponseTooLargeToReplay) as replay:
        await store.run(scope="t:c:u", key="big", fingerprint="f", call=create)
    assert replay.value.status == 409
    assert replay.value.extra["original_status"] == 201
    assert replay.value.extra["original_location"] == "/things/1"
    assert replay.value.extra["original_body_sha256"] == hashlib.sha256(body).hexdigest()
    assert calls == [1]
    (record_key,) = await _idempotency_keys(redis, namespace)
    assert await redis.strlen(record_key) <= 1024


async def test_a_request_refused_by_auth_records_nothing(
    service_client: ClientFactory, settings: BaseServiceSettings, redis: Redis, namespace: str
) -> None:
    router = Router()

    @router.post("/things", status=201, auth=True, idempotent=True)
    async def create(thing: Annotated[Thing, Body()]) -> web.Response:
        raise AssertionError("never reached")

    resources = [core.redis_ctx(REDIS_URL), core.auth_ctx(settings)]
    app = core.create_app("t", settings, routers=[router], resources=resources)
    client = await service_client(app)
    resp = await client.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "k"})
    assert resp.status == 401
    assert await _idempotency_keys(redis, namespace) == []
