"""The cache in an application: ``cache_ctx``, warm-up, ``/metrics`` and the hit ratio."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from redis.asyncio import Redis

import core
from core.cache import CACHE, Cache, Warmup, cache_ctx, cache_warmup_ctx, cached
from core.testing import wait_for
from tests.core.conftest import Client, ClientFactory, SettingsFactory


class Catalog:
    """A tiny service cached through the app's cache."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.loads = 0

    @cached(cache=lambda self: self.cache, ttl=60, key="category:{slug}", name="catalog.category")
    async def category(self, slug: str) -> dict[str, Any]:
        self.loads += 1
        return {"slug": slug}


CATALOG = web.AppKey("catalog", Catalog)


def catalog_app(
    settings: core.BaseServiceSettings,
    *,
    warmup: Warmup | None = None,
    warmup_timeout: float = 30.0,
) -> web.Application:
    """An app whose catalog is built after the cache, and warmed (the two categories unless
    ``warmup`` says otherwise) after both."""

    async def category(request: web.Request) -> web.Response:
        return web.json_response(await request.app[CATALOG].category(request.match_info["slug"]))

    async def catalog_ctx(app: web.Application) -> AsyncIterator[None]:
        app[CATALOG] = Catalog(app[CACHE])
        yield

    def categories(app: web.Application) -> list[Any]:
        return [app[CATALOG].category(slug) for slug in ("lamps", "desks")]

    resources = [
        cache_ctx(settings),
        catalog_ctx,
        cache_warmup_ctx(warmup or categories, timeout=warmup_timeout),
    ]
    app = core.create_app("catalog", settings, resources=resources)
    app.router.add_get("/categories/{slug}", category)
    return app


async def ready(client: Client) -> Any:
    """Wait until ``/readyz`` passes; its body."""

    async def passes() -> Any:
        resp = await client.get("/readyz")
        body: dict[str, Any] = await resp.json()
        return body if resp.status == 200 else None

    return await wait_for(passes)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_the_app_warms_its_cache_and_exposes_the_cache_metrics(
    service_client: ClientFactory, make_settings: SettingsFactory, redis: Redis
) -> None:
    app = catalog_app(make_settings())
    client = await service_client(app)
    await ready(client)
    catalog = app[CATALOG]
    assert catalog.loads == 2  # warmed before the instance reports ready

    for _ in range(3):
        resp = await client.get("/categories/lamps")
        assert await resp.json() == {"slug": "lamps"}
    assert catalog.loads == 2

    resp = await client.get("/metrics")
    found = samples(await resp.text())
    function = (("function", "catalog.category"),)
    assert found[("cache_hits_total", (*function, ("tier", "memory")))] == 3
    assert found[("cache_misses_total", (*function, ("tier", "memory")))] == 2
    assert found[("cache_misses_total", (*function, ("tier", "redis")))] == 2
    assert found[("cache_loads_total", function)] == 2
    assert found[("cache_evictions_total", (*function, ("tier", "memory")))] == 0
    assert found[("cache_latency_seconds_count", (*function, ("outcome", "memory")))] == 3
    assert found[("cache_latency_seconds_count", (*function, ("outcome", "miss")))] == 2
    assert found[("cache_tier_up", (("tier", "redis"),))] == 1
    assert found[("cache_tier_up", (("tier", "memcached"),))] == 1
    assert found[("cache_memory_entries", ())] == 2

    assert app[CACHE].hit_ratio()["catalog.category"] == {
        "memcached": 0.0,
        "memory": 0.6,
        "redis": 0.0,
    }
    await app[CACHE].invalidate(keys=["category:lamps", "category:desks"])


async def test_evictions_are_counted_per_function(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    app = catalog_app(make_settings(cache_l1_max_entries=1, cache_tiers=("memory",)))
    await ready(await service_client(app))
    cache = app[CACHE]
    assert cache.stats.functions["catalog.category"].evictions == 1  # two warmed, room for one
    assert cache.memory is not None
    assert len(cache.memory) == 1


async def test_the_cache_is_closed_with_the_app(
    make_settings: SettingsFactory, redis: Redis
) -> None:
    app = catalog_app(make_settings())
    runner = web.AppRunner(app)
    await runner.setup()
    cache = app[CACHE]
    assert cache.redis is not None
    exposition = app[core.METRICS].exposition  # reads /proc: off the loop
    assert b"cache_memory_entries" in await asyncio.to_thread(exposition)
    await runner.cleanup()
    assert not cache.listening
    assert b"cache_memory_entries" not in await asyncio.to_thread(exposition)


def test_the_cache_settings_and_their_bounds(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    assert settings.cache_tiers == ("memory", "redis", "memcached")
    assert settings.cache_l1_ttl == 1.0
    monkeypatch.setenv("CACHE_TIERS", '["memory", "redis"]')
    monkeypatch.setenv("CACHE_L1_TTL", "0.5")
    from_env = make_settings()
    assert from_env.cache_tiers == ("memory", "redis")
    assert from_env.cache_l1_ttl == 0.5
    with pytest.raises(ValidationError):
        make_settings(cache_tiers=["memory", "disk"])
    with pytest.raises(ValidationError):
        make_settings(cache_remote_timeout=0)


async def test_readiness_waits_for_the_warm_up_while_liveness_answers(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    release = asyncio.Event()

    async def slow_source() -> None:
        await release.wait()

    def warmup(app: web.Application) -> list[Any]:
        return [app[CATALOG].category("lamps"), slow_source()]

    app = catalog_app(make_settings(), warmup=warmup)
    client = await service_client(app)

    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["cache-warmup"] == {"status": "down", "error": "warming"}
    assert (await client.get("/healthz")).status == 200

    release.set()
    body = await ready(client)
    assert "cache-warmup" not in body["checks"]
    assert app[CATALOG].loads == 1


async def test_a_failing_warm_up_still_lets_the_service_become_ready(
    service_client: ClientFactory, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("warm-up source down")

    async def loads(app: web.Application) -> AsyncIterator[Any]:
        yield app[CATALOG].category("lamps")
        yield broken()
        raise RuntimeError("the list of hot keys is unavailable")

    app = catalog_app(make_settings(), warmup=loads)
    with caplog.at_level(logging.INFO, logger="core.cache"):
        client = await service_client(app)
        await ready(client)
    assert app[CATALOG].loads == 1  # what was started before the source failed ran
    messages = [record.getMessage() for record in caplog.records]
    assert "cache warm-up load failed" in messages
    assert "cache warm-up failed: serving cold" in messages
    resp = await client.get("/categories/desks")
    assert resp.status == 200


async def test_a_warm_up_past_its_timeout_is_abandoned_and_the_service_becomes_ready(
    service_client: ClientFactory, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled = asyncio.Event()

    async def endless() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    def warmup(app: web.Application) -> list[Any]:
        return [app[CATALOG].category("lamps"), endless()]

    app = catalog_app(make_settings(), warmup=warmup, warmup_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="core.cache"):
        await ready(await service_client(app))
    assert cancelled.is_set()
    assert any("abandoned after 0.2 s (1 entries warmed)" in r.getMessage() for r in caplog.records)


async def test_the_warm_up_logs_how_many_entries_it_warmed(
    service_client: ClientFactory, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = catalog_app(make_settings())
    with caplog.at_level(logging.INFO, logger="core.cache"):
        await ready(await service_client(app))
    warmed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cache warmed")]
    assert len(warmed) == 1
    assert warmed[0].startswith("cache warmed: 2 entries in ")
