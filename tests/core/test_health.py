"""/healthz and /readyz against the real PostgreSQL and Redis."""

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

import core
from tests.core.conftest import (
    CLOSED_REDIS_URL,
    POSTGRES_DSN,
    REDIS_URL,
    ClientFactory,
    SettingsFactory,
)


async def test_healthz(service_client: ClientFactory, make_settings: SettingsFactory) -> None:
    client = await service_client(core.create_app("catalog", make_settings()))
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "service": "catalog"}


async def test_readyz_without_dependencies(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await service_client(core.create_app("t", make_settings()))
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {}}


async def test_readyz_with_real_postgres_and_redis(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    app = core.create_app(
        "t", settings, resources=[core.redis_ctx(REDIS_URL), core.postgres_ctx(POSTGRES_DSN)]
    )
    client = await service_client(app)
    assert isinstance(app[core.DB_POOL].get_size(), int)
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert await resp.json() == {
        "status": "ok",
        "checks": {"redis": {"status": "up"}, "postgres": {"status": "up"}},
    }


async def test_readyz_is_503_per_dependency_when_redis_is_down(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_url=CLOSED_REDIS_URL, readiness_timeout=0.5)
    app = core.create_app(
        "t",
        settings,
        resources=[core.redis_ctx(settings.redis_url), core.postgres_ctx(POSTGRES_DSN)],
    )
    client = await service_client(app)
    start = time.monotonic()
    resp = await client.get("/readyz")
    text = await resp.text()
    elapsed = time.monotonic() - start
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert set(body["checks"]) == {"redis", "postgres"}
    assert body["checks"]["postgres"] == {"status": "up"}
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["redis"]["error"] in {"unreachable", "timeout"}
    assert elapsed < settings.readiness_timeout + 1.0
    for leak in ("127.0.0.1", "6379", ":1", "redis://", "Errno", "refused"):
        assert leak not in text, leak


async def test_readyz_answers_within_the_timeout_when_a_check_hangs(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    never = asyncio.Event()

    async def hanging_ctx(app: web.Application) -> AsyncIterator[None]:
        async def check() -> None:
            await never.wait()

        app[core.HEALTH].add("broker", check)
        yield

    settings = make_settings(readiness_timeout=0.2)
    client = await service_client(
        core.create_app("t", settings, resources=[core.redis_ctx(REDIS_URL), hanging_ctx])
    )
    start = time.monotonic()
    resp = await client.get("/readyz")
    elapsed = time.monotonic() - start
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "checks": {"redis": {"status": "up"}, "broker": {"status": "down", "error": "timeout"}},
    }
    assert elapsed < 0.2 + 1.0


async def test_checks_are_removed_when_their_resource_closes(
    make_settings: SettingsFactory,
) -> None:
    app = core.create_app(
        "t", make_settings(), resources=[core.redis_ctx(REDIS_URL), core.postgres_ctx(POSTGRES_DSN)]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert app[core.HEALTH].names == ["postgres", "redis"]
    finally:
        await runner.cleanup()
    assert app[core.HEALTH].names == []


async def test_a_draining_instance_fails_readiness_whatever_its_checks_say(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    app = core.create_app("t", make_settings(), resources=[core.redis_ctx(REDIS_URL)])
    client = await service_client(app)
    assert (await client.get("/readyz")).status == 200
    app[core.HEALTH].start_draining()
    assert app[core.HEALTH].draining
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {
        "status": "unavailable",
        "checks": {"draining": {"status": "down", "error": "shutting down"}},
    }
    assert (await client.get("/healthz")).status == 200  # alive: it still serves
