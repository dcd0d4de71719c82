"""The cache in an application: ``cache_ctx``, warm-up, ``/metrics`` and the hit ratio."""

import asyncio
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from redis.asyncio import Redis

import core
from core.cache import CACHE, Cache, cache_ctx, cached
from tests.core.conftest import ClientFactory, SettingsFactory


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


def catalog_app(settings: core.BaseServiceSettings) -> web.Application:
    async def category(request: web.Request) -> web.Response:
        return web.json_response(await request.app[CATALOG].category(request.match_info["slug"]))

    def warmup(app: web.Application) -> list[Any]:
        app[CATALOG] = Catalog(app[CACHE])
        return [app[CATALOG].category(slug) for slug in ("lamps", "desks")]

    app = core.create_app("catalog", settings, resources=[cache_ctx(settings, warmup=warmup)])
    app.router.add_get("/categories/{slug}", category)
    return app


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
    catalog = app[CATALOG]
    assert catalog.loads == 2  # warmed before the first request

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
    await service_client(app)
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
