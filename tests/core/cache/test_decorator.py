"""``@cached`` on functions and methods: resolution of the cache, negative caching, typed results,
early refresh and stale-while-revalidate, explicit refresh and invalidation of a call."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from core.cache import Cache, cached
from core.errors import NotFound
from core.testing import wait_for
from tests.core.cache.conftest import CacheFactory


class Product(BaseModel):
    id: uuid.UUID
    name: str
    price_cents: int
    updated_at: datetime


class Products:
    """A service whose methods are cached in the cache it was given."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.rows: dict[uuid.UUID, Product] = {}
        self.reads = 0

    @cached(
        cache=lambda self: self.cache,
        ttl=30,
        key="product:{product_id}",
        tags=["product:{product_id}", "products"],
        negative_ttl=30,
    )
    async def get(self, product_id: uuid.UUID) -> Product | None:
        self.reads += 1
        return self.rows.get(product_id)

    @cached(
        cache=lambda self: self.cache,
        ttl=30,
        key="strict:{product_id}",
        negative_ttl=30,
        cache_errors=(NotFound,),
    )
    async def get_or_404(self, product_id: uuid.UUID) -> Product:
        self.reads += 1
        if product_id not in self.rows:
            raise NotFound(f"no product {product_id}")
        return self.rows[product_id]


def make_product(name: str = "Lamp") -> Product:
    return Product(
        id=uuid.uuid4(), name=name, price_cents=1999, updated_at=datetime(2025, 5, 1, tzinfo=UTC)
    )


async def test_a_method_finds_its_cache_through_self_and_returns_the_model(
    make_cache: CacheFactory,
) -> None:
    products = Products(make_cache())
    product = make_product()
    products.rows[product.id] = product
    assert await products.get(product.id) == product
    assert products.cache.memory is not None
    products.cache.memory.clear()
    again = await products.get(product.id)  # decoded from Redis, validated as a Product
    assert again == product
    assert isinstance(again, Product)
    assert products.reads == 1


async def test_two_instances_with_two_caches_keep_apart(
    make_cache: CacheFactory, namespace: str
) -> None:
    # namespaces below this test's, so that the fixture deletes their keys
    first = Products(make_cache(namespace=f"{namespace}:a"))
    second = Products(make_cache(namespace=f"{namespace}:b"))
    product = make_product()
    first.rows[product.id] = product
    assert await first.get(product.id) == product
    assert await second.get(product.id) is None
    await first.cache.invalidate(tags=["products"])
    await second.cache.invalidate(tags=["products"])


async def test_none_is_cached_only_when_asked(make_cache: CacheFactory) -> None:
    cache = make_cache()
    products = Products(cache)
    missing = uuid.uuid4()
    assert await products.get(missing) is None
    assert await products.get(missing) is None
    assert products.reads == 1  # negative_ttl: the None was cached

    calls = 0

    @cached(cache=cache, ttl=30, key="plain:{item}")
    async def plain(item: int) -> int | None:
        nonlocal calls
        calls += 1
        return None

    await plain(1)
    await plain(1)
    assert calls == 2


async def test_a_declared_error_is_cached_and_raised_again(
    make_cache: CacheFactory,
) -> None:
    products = Products(make_cache())
    missing = uuid.uuid4()
    for _ in range(3):
        with pytest.raises(NotFound, match=str(missing)):
            await products.get_or_404(missing)
    assert products.cache.memory is not None
    products.cache.memory.clear()
    with pytest.raises(NotFound, match=str(missing)):
        await products.get_or_404(missing)  # from Redis
    assert products.reads == 1


async def test_a_bound_method_invalidates_and_refreshes_its_own_call(
    make_cache: CacheFactory, redis: Redis
) -> None:
    products = Products(make_cache())
    product = make_product()
    products.rows[product.id] = product
    await products.get(product.id)
    assert products.get.key(product.id) == products.cache.keyspace.record(
        f"product:{product.id}", 1
    )

    products.rows[product.id] = product.model_copy(update={"name": "Desk lamp"})
    assert (await products.get(product.id)).name == "Lamp"  # type: ignore[union-attr]
    assert await products.get.invalidate(product.id) is True
    assert (await products.get(product.id)).name == "Desk lamp"  # type: ignore[union-attr]

    products.rows[product.id] = product.model_copy(update={"name": "Floor lamp"})
    refreshed = await products.get.refresh(product.id)
    assert refreshed is not None
    assert refreshed.name == "Floor lamp"
    assert (await products.get(product.id)).name == "Floor lamp"  # type: ignore[union-attr]
    assert products.reads == 3


async def test_the_class_attribute_is_the_cached_function(make_cache: CacheFactory) -> None:
    products = Products(make_cache())
    product = make_product()
    products.rows[product.id] = product
    assert await Products.get(products, product.id) == product
    assert Products.get.__name__ == "get"
    assert Products.get.__wrapped__.__qualname__ == "Products.get"


async def test_a_resolver_needs_an_argument(make_cache: CacheFactory) -> None:
    @cached(cache=lambda first: first.cache, ttl=1)
    async def nothing() -> None: ...

    with pytest.raises(TypeError, match="no argument"):
        await nothing()


async def test_early_refresh_recomputes_a_hot_key_in_the_background(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    version = 0

    # a huge beta makes every hit an early one: the XFetch draw is then certain
    @cached(cache=cache, ttl=30, key="hot", early_refresh=1e12)
    async def hot() -> int:
        nonlocal version
        version += 1
        return version

    assert await hot() == 1
    assert await hot() == 1  # served at once; a refresh starts behind it

    async def refreshed() -> bool:
        return await hot() > 1

    await wait_for(refreshed)


async def test_no_early_refresh_far_from_expiry_with_the_default_beta(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    calls = 0

    @cached(cache=cache, ttl=3600, key="cold")
    async def cold() -> int:
        nonlocal calls
        calls += 1
        return calls

    for _ in range(200):
        await cold()
    assert calls == 1
    assert not cache._path._refreshing


async def test_a_stale_value_is_served_while_it_is_recomputed() -> None:
    now = [1000.0]
    release = asyncio.Event()
    calls = 0

    async with Cache("stale-test", tiers=["memory"], clock=lambda: now[0]) as cache:

        @cached(cache=cache, ttl=10, stale_ttl=50, key="k", early_refresh=None)
        async def value() -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                await release.wait()
            return calls

        assert await value() == 1
        now[0] += 30  # expired, within the stale window
        assert await value() == 1

        async def refreshing() -> bool:
            return calls == 2

        await wait_for(refreshing)
        assert await value() == 1  # still stale while the refresh runs
        release.set()

        async def refreshed() -> bool:
            return await value() == 2

        await wait_for(refreshed)
        now[0] += 61  # beyond the stale window: a plain miss
        assert await value() == 3


async def test_an_invalidation_is_never_answered_with_a_stale_value(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    version = 0

    @cached(cache=cache, ttl=30, stale_ttl=300, key="k", tags=["t"])
    async def value() -> int:
        nonlocal version
        version += 1
        return version

    assert await value() == 1
    await cache.invalidate(tags=["t"])
    assert await value() == 2


async def test_warming_runs_the_loads_and_reports_failures(make_cache: CacheFactory) -> None:
    cache = make_cache()
    products = Products(cache)
    product = make_product()
    products.rows[product.id] = product

    async def broken() -> None:
        raise RuntimeError("warm-up source down")

    failed = await cache.warm([products.get(product.id), broken(), products.get(uuid.uuid4())])
    assert failed == 1
    assert products.reads == 2
    await products.get(product.id)
    assert products.reads == 2


def test_only_async_functions_can_be_cached(make_cache: CacheFactory) -> None:
    def blocking(item: int) -> int:
        return item

    with pytest.raises(TypeError, match="async function"):
        cached(cache=make_cache(), ttl=1)(blocking)  # type: ignore[arg-type]
