"""Data in Redis or memcached that this cache did not write is ignored, never executed."""

import asyncio
import pickle
import uuid
from pathlib import Path
from typing import Any

import aiomcache
import orjson
import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from core.cache import Record, cached, encode_record
from tests.core.cache.conftest import CacheFactory


class Exploit:
    """Unpickling this would create a file: the proof that a cache executed foreign data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


class Price(BaseModel):
    sku: str
    cents: int


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, bytes]:
    marker = tmp_path / "executed"
    return marker, pickle.dumps(Exploit(marker))


def foreign_payloads(pickled: bytes, now: float) -> list[bytes]:
    return [
        pickled,
        b'{"v": {"sku": "a", "cents": 1}, "exp": 9999999999}',
        b"\x80\x04K\x01.",
        encode_record(Record(b'{"sku": "a", "cents": "free"}', now, now + 60, 0.0, (0, 0))),
        encode_record(Record(pickled, now, now + 60, 0.0, (0, 0))),
    ]


async def test_foreign_data_in_redis_is_ignored_and_recomputed(
    make_cache: CacheFactory, redis: Redis, planted: tuple[Path, bytes]
) -> None:
    marker, pickled = planted
    cache = make_cache(tiers=["memory", "redis"])
    calls = 0

    @cached(cache=cache, ttl=60, key="price:{sku}", tags=["prices"])
    async def price(sku: str) -> Price:
        nonlocal calls
        calls += 1
        return Price(sku=sku, cents=1999)

    for index, payload in enumerate(foreign_payloads(pickled, cache._clock())):
        sku = f"sku-{index}"
        await redis.set(cache.keyspace.record(f"price:{sku}", 1), payload)
        assert await price(sku) == Price(sku=sku, cents=1999)
    assert calls == 5
    assert not await asyncio.to_thread(marker.exists)
    stats = next(iter(cache.stats.functions.values()))
    assert stats.invalid == {"redis": 5}
    assert stats.hits == {}
    # what was computed replaced the foreign data
    assert cache.memory is not None
    cache.memory.clear()
    assert await price("sku-0") == Price(sku="sku-0", cents=1999)
    assert calls == 5


async def test_foreign_data_in_memcached_is_ignored_and_recomputed(
    make_cache: CacheFactory, planted: tuple[Path, bytes]
) -> None:
    marker, pickled = planted
    cache = make_cache()
    calls = 0

    @cached(cache=cache, ttl=60, key="price:{sku}", tiers=["memcached"])
    async def price(sku: str) -> Price:
        nonlocal calls
        calls += 1
        return Price(sku=sku, cents=1999)

    client = aiomcache.Client("127.0.0.1", 11211)
    try:
        for index, payload in enumerate(foreign_payloads(pickled, cache._clock())):
            sku = f"n{index}-{uuid.uuid4().hex[:6]}"
            await client.set(cache.keyspace.record(f"price:{sku}", 1).encode(), payload, 60)
            assert await price(sku) == Price(sku=sku, cents=1999)
    finally:
        await client.close()
    assert calls == 5
    assert not await asyncio.to_thread(marker.exists)
    stats = next(iter(cache.stats.functions.values()))
    assert stats.invalid == {"memcached": 5}


async def test_a_record_from_another_version_of_the_function_is_not_read(
    make_cache: CacheFactory, redis: Redis
) -> None:
    cache = make_cache(tiers=["redis"])
    now = cache._clock()
    stamps = (0,)
    old_shape = encode_record(Record(orjson.dumps({"price": 5}), now, now + 60, 0.0, stamps))
    await redis.set(cache.keyspace.record("price:x", 1), old_shape)

    @cached(cache=cache, ttl=60, key="price:{sku}")
    async def price(sku: str) -> Price:
        return Price(sku=sku, cents=7)

    assert await price("x") == Price(sku="x", cents=7)
