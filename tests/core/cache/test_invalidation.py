"""Invalidation by key and by tag, seen by another instance's in-process tier within a second."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from core.cache import Cache, cached
from core.cache.invalidation import InvalidationListener, decode_message, encode_message
from core.testing import wait_for
from tests.core.cache.conftest import CacheFactory, ServerProcess

Store = dict[int, str]


def catalog(cache: Cache, store: Store) -> Callable[[int], Any]:
    """A cached read of ``store`` in ``cache``: what one instance of a service would have."""

    @cached(cache=cache, ttl=60, key="item:{item}", tags=["item:{item}", "catalog"])
    async def get(item: int) -> str:
        return store[item]

    return get


async def test_an_invalidation_by_key_reaches_the_other_instance_within_a_second(
    started: Callable[..., Any],
) -> None:
    store = {1: "old"}
    # in-process entries may live a minute here: only the message can explain a fresh read
    first, second = await started(l1_ttl=60), await started(l1_ttl=60)
    read_first, read_second = catalog(first, store), catalog(second, store)
    assert await read_first(1) == "old"
    assert await read_second(1) == "old"
    key = second.keyspace.record("item:1", 1)
    assert second.memory is not None
    assert key in second.memory

    store[1] = "new"
    invalidated_at = time.monotonic()
    assert await first.invalidate(keys=["item:1"]) is True

    async def dropped() -> bool:
        assert second.memory is not None
        return key not in second.memory

    await wait_for(dropped, within=1.0, interval=0.005)
    assert time.monotonic() - invalidated_at < 1.0
    assert await read_second(1) == "new"
    assert await read_first(1) == "new"


async def test_an_invalidation_by_tag_reaches_the_other_instance_within_a_second(
    started: Callable[..., Any],
) -> None:
    store = {1: "a1", 2: "b1"}
    first, second = await started(l1_ttl=60), await started(l1_ttl=60)
    read_first, read_second = catalog(first, store), catalog(second, store)
    for item in (1, 2):
        await read_first(item)
        await read_second(item)
    store.update({1: "a2", 2: "b2"})

    await first.invalidate(tags=["catalog"])

    async def both_fresh() -> bool:
        return [await read_second(1), await read_second(2)] == ["a2", "b2"]

    await wait_for(both_fresh, within=1.0, interval=0.005)
    assert second.listening


async def test_without_messages_an_in_process_entry_lives_at_most_l1_ttl(
    make_cache: CacheFactory,
) -> None:
    store = {1: "old"}
    writer = make_cache()
    reader = make_cache(l1_ttl=0.5)  # never started: it receives no invalidation messages
    read_writer, read_reader = catalog(writer, store), catalog(reader, store)
    await read_writer(1)
    assert await read_reader(1) == "old"
    store[1] = "new"
    await writer.invalidate(keys=["item:1"])
    invalidated_at = time.monotonic()
    assert await read_reader(1) == "old"  # its in-process copy, for now

    async def fresh() -> bool:
        return await read_reader(1) == "new"

    await wait_for(fresh, within=1.0, interval=0.01)
    assert time.monotonic() - invalidated_at <= 1.0
    assert not reader.listening


async def test_a_value_computed_before_an_invalidation_is_never_served_after_it(
    started: Callable[..., Any],
) -> None:
    """The race every cache-aside has: a slow read of the old row finishes after the write and
    its invalidation, and stores the old value. Its stamps are those read before computing."""
    first, second = await started(), await started()
    store = {1: "old"}
    in_read, finish_read = asyncio.Event(), asyncio.Event()

    @cached(cache=first, ttl=60, key="item:{item}", tags=["catalog"])
    async def slow_get(item: int) -> str:
        value = store[item]
        in_read.set()
        await finish_read.wait()
        return value

    read_second = catalog(second, store)
    slow = asyncio.create_task(slow_get(1))
    await in_read.wait()
    store[1] = "new"
    await first.invalidate(tags=["catalog"])
    finish_read.set()
    assert await slow == "old"  # its caller asked before the write
    assert await read_second(1) == "new"
    assert second.memory is not None
    second.memory.clear()
    assert await read_second(1) == "new"


async def test_the_writer_reads_its_own_write_even_with_a_lookup_in_flight(
    make_cache: CacheFactory,
) -> None:
    cache = make_cache()
    store = {1: "old"}
    in_read, finish_read = asyncio.Event(), asyncio.Event()

    @cached(cache=cache, ttl=60, key="item:{item}")
    async def get(item: int) -> str:
        value = store[item]
        in_read.set()
        await finish_read.wait()
        return value

    before = asyncio.create_task(get(1))
    await in_read.wait()
    store[1] = "new"
    await cache.invalidate(keys=["item:1"])
    after = asyncio.create_task(get(1))  # must not join the lookup that started before
    finish_read.set()
    assert await before == "old"
    assert await after == "new"


async def test_foreign_messages_on_the_channel_are_ignored(
    started: Callable[..., Any], redis: Redis
) -> None:
    cache = await started()
    store = {1: "v"}
    read = catalog(cache, store)
    await read(1)
    for junk in (b"not json", b"[1,2]", b'{"o": 1, "m": "x"}', b'{"o": "x", "m": [1]}'):
        await redis.publish(cache.keyspace.channel, junk)
    await redis.publish(cache.keyspace.channel, encode_message("someone", ["k:item:1"]))

    async def dropped() -> bool:
        assert cache.memory is not None
        return cache.memory.size_bytes == 0

    await wait_for(dropped)
    assert decode_message(b'{"o":"x","m":["k:a"]}') == ("x", ["k:a"])
    assert decode_message(b"nope") is None


async def test_an_invalidation_made_while_redis_is_down_is_sent_when_it_is_back(
    redis_process: ServerProcess, make_cache: CacheFactory
) -> None:
    options = {"redis_url": redis_process.url, "breaker_cooldown": 0.1}
    writer, reader = make_cache(**options), make_cache(**options)
    await writer.start()
    store = {1: "old"}
    read_writer, read_reader = catalog(writer, store), catalog(reader, store)
    await read_writer(1)

    async def subscribed() -> bool:
        return writer.listening

    await wait_for(subscribed)
    await redis_process.stop()
    store[1] = "new"
    assert await writer.invalidate(keys=["item:1"]) is False
    assert writer.unsent_invalidations == 1
    assert await read_writer(1) == "new"  # its own copy was dropped at once

    await redis_process.start()  # an empty Redis: the writer's listener reconnects and resends
    await read_reader(1)  # stores a fresh record, stamped with the versions of now

    async def resent() -> bool:
        return writer.unsent_invalidations == 0

    await wait_for(resent)
    async with Redis.from_url(redis_process.url) as client:
        assert await client.get(writer.keyspace.version("k:item:1")) is not None


async def test_the_listener_backs_off_while_redis_is_down_and_starts_over_once_back(
    redis_process: ServerProcess,
) -> None:
    """Reconnects wait with ``core.retry.Backoff``: failures are counted while the server is
    away, and a new subscription resets the count (the next outage starts from the base)."""
    client = Redis.from_url(redis_process.url)
    listener = InvalidationListener(
        client,
        "test:channel",
        origin="me",
        on_marks=lambda marks: None,
        min_backoff=0.01,
        max_backoff=0.05,
    )
    assert (listener.backoff.base, listener.backoff.cap) == (0.01, 0.05)
    listener.start()
    try:

        async def subscribed() -> bool:
            return listener.listening and listener.backoff.failures == 0

        await wait_for(subscribed)
        await redis_process.stop()

        async def backing_off() -> bool:
            return not listener.listening and listener.backoff.failures >= 3

        await wait_for(backing_off)
        await redis_process.start()
        await wait_for(subscribed)
    finally:
        await listener.stop()
        await client.aclose()
