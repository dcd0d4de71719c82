"""``json()``: a result's JSON as the cache keeps it, and values shared by hits in memory."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
import pytest
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from core.cache import Record, cached, encode_record
from core.cache.serialize import immutable
from tests.core.cache.conftest import CacheFactory


class Price(BaseModel):
    sku: str
    cents: int


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenPrice:
    sku: str
    cents: int
    at: datetime | None = None


class NotFound(Exception):
    pass


async def test_json_is_what_the_codec_writes_on_a_miss_and_on_hits(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache(tiers=["memory", "redis"])
    calls = 0

    @cached(cache=cache, ttl=60, key="price:{sku}", tags=["prices"])
    async def price(sku: str) -> Price:
        nonlocal calls
        calls += 1
        return Price(sku=sku, cents=1999 + calls)

    expected = b'{"sku":"a","cents":2000}'
    assert await price.json("a") == expected  # computed
    assert await price.json("a") == expected  # memory
    assert cache.memory is not None
    cache.memory.clear()
    assert await price.json("a") == expected  # redis, then memory
    assert await price.json("a") == expected
    assert calls == 1
    stats = next(iter(cache.stats.functions.values()))
    assert stats.hits == {"memory": 2, "redis": 1}

    await cache.invalidate(tags=["prices"])
    assert await price.json("a") == b'{"sku":"a","cents":2001}'
    assert await price("a") == Price(sku="a", cents=2001)


async def test_json_of_none_is_none_and_a_cached_error_is_raised(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache(tiers=["memory", "redis"])

    @cached(cache=cache, ttl=60, key="maybe:{sku}", negative_ttl=5, cache_errors=(NotFound,))
    async def maybe(sku: str) -> Price | None:
        if sku == "gone":
            raise NotFound(sku)
        return None

    for _ in range(2):  # computed, then from memory
        assert await maybe.json("none") is None
        with pytest.raises(NotFound):
            await maybe.json("gone")


async def test_json_leaves_out_what_another_writer_added(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(tiers=["memory", "redis"])

    @cached(cache=cache, ttl=60, key="price:{sku}", lock=False)
    async def price(sku: str) -> Price:
        raise AssertionError("read from Redis, not computed")

    now = cache._clock()
    versions = await redis.mget([cache.keyspace.version("k:price:a")])
    stamps = tuple(int(v or 0) for v in versions)
    payload = b'{"sku": "a", "cents": 5, "secret": "not for clients"}'
    await redis.set(
        cache.keyspace.record("price:a", 1),
        encode_record(Record(payload, now, now + 60, 0.0, stamps)),
    )
    for _ in range(2):  # from Redis, then from memory
        body = await price.json("a")
        assert body is not None
        assert orjson.loads(body) == {"sku": "a", "cents": 5}


async def test_hits_share_an_immutable_value_and_copy_a_mutable_one(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache(tiers=["memory"])

    @cached(cache=cache, ttl=60, key="frozen:{sku}")
    async def frozen(sku: str) -> FrozenPrice:
        return FrozenPrice(sku=sku, cents=1)

    @cached(cache=cache, ttl=60, key="mutable:{sku}")
    async def mutable(sku: str) -> Price:
        return Price(sku=sku, cents=1)

    await frozen("a")
    first, second = await frozen("a"), await frozen("a")
    assert first is second
    assert first == FrozenPrice(sku="a", cents=1)

    await mutable("a")
    got = await mutable("a")
    got.cents = 99
    again = await mutable("a")
    assert again is not got
    assert again.cents == 1


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    tags: tuple[str, ...]
    kind: Literal["a", "b"]


class OpenModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    attributes: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class HoldsAList:
    items: list[int]


@dataclasses.dataclass
class NotFrozen:
    cents: int


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, True),
        (str | None, True),
        (tuple[int, ...], True),
        (frozenset[uuid.UUID], True),
        (FrozenPrice | None, True),
        (FrozenModel, True),
        (tuple[FrozenModel, FrozenPrice], True),
        (OpenModel, False),
        (HoldsAList, False),
        (NotFrozen, False),
        (Price, False),
        (list[int], False),
        (dict[str, int], False),
        (tuple[int, list[int]], False),
        (tuple, False),
        (Any, False),
    ],
)
def test_which_types_are_immutable(annotation: Any, expected: bool) -> None:
    assert immutable(annotation) is expected
