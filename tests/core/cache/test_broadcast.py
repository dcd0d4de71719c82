"""Invalidations as bus broadcasts: between caches on buses of their own, over RabbitMQ and in
memory, through outages of the broker and of Redis, and as ``cache_ctx`` wires them."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

import core
from core.bus import Bus, InMemoryTransport, Transport, bus_ctx
from core.bus.amqp import AmqpTransport
from core.cache import CACHE, Cache, CacheInvalidated, cache_ctx, cached
from core.context import correlation_id
from core.testing import wait_for
from core.testing.bus import BusKit
from tests.core.bus.conftest import BrokerProxy
from tests.core.cache.conftest import CacheFactory, ServerProcess
from tests.core.conftest import ClientFactory, SettingsFactory

Store = dict[int, str]
Read = Callable[[int], Awaitable[str]]


def catalog(cache: Cache, store: Store) -> Read:
    """A cached read of ``store`` in ``cache``: what one instance of a service would have."""

    @cached(cache=cache, ttl=60, key="item:{item}", tags=["item:{item}", "catalog"])
    async def get(item: int) -> str:
        return store[item]

    return get


def holds(cache: Cache, item: int) -> Callable[[], Awaitable[bool]]:
    """A condition: ``cache``'s in-process tier holds ``item``'s entry."""
    key = cache.keyspace.record(f"item:{item}", 1)

    async def check() -> bool:
        assert cache.memory is not None
        return key in cache.memory

    return check


def dropped(cache: Cache, item: int) -> Callable[[], Awaitable[bool]]:
    """A condition: ``cache``'s in-process tier no longer holds ``item``'s entry."""
    held = holds(cache, item)

    async def check() -> bool:
        return not await held()

    return check


async def on_bus(make_cache: CacheFactory, bus: Bus, **options: Any) -> Cache:
    """A started cache invalidating through ``bus`` (connected here), once it listens; its
    in-process entries may live a minute: only a message can explain that one goes."""
    await bus.connect()
    options.setdefault("l1_ttl", 60)
    cache = make_cache(bus=bus, **options)
    await cache.start()

    async def listening() -> bool:
        return cache.listening

    await wait_for(listening)
    return cache


async def subscribers(redis: Redis, cache: Cache) -> int:
    """How many listen on ``cache``'s Redis pub/sub channel."""
    [(_, count)] = await redis.pubsub_numsub(cache.keyspace.channel)
    return int(count)


async def test_an_invalidation_reaches_the_other_instance_over_the_bus(
    bus_kit: BusKit, make_cache: CacheFactory, namespace: str, redis: Redis
) -> None:
    first = await on_bus(make_cache, bus_kit.bus("first"))
    second = await on_bus(make_cache, bus_kit.bus("second"))
    elsewhere = await on_bus(make_cache, bus_kit.bus("elsewhere"), namespace=f"{namespace}:other")
    store = {1: "a1", 2: "b1"}
    reads = [catalog(c, store) for c in (first, second, elsewhere)]
    read_first, read_second, read_elsewhere = reads
    for read in (read_first, read_second, read_elsewhere):
        assert [await read(1), await read(2)] == ["a1", "b1"]
    log = await bus_kit.record(CacheInvalidated)

    store[1] = "a2"
    invalidated_at = time.monotonic()
    write = correlation_id.set("write-1")  # the write that invalidates
    try:
        assert await first.invalidate(keys=["item:1"]) is True
    finally:
        correlation_id.reset(write)
    await wait_for(dropped(second, 1), within=2.0, interval=0.005)
    assert time.monotonic() - invalidated_at < 2.0
    assert await read_second(1) == "a2"
    assert await holds(second, 2)()  # only the invalidated key went
    # the counter was bumped in Redis: the shared record of before is never served again
    assert await redis.get(first.keyspace.version("k:item:1")) is not None
    assert await subscribers(redis, first) == 0  # the bus carried it, not Redis pub/sub
    received = await log.one(CacheInvalidated)
    assert received.event.marks == ("k:item:1",)
    assert (received.event.namespace, received.event.origin) == (namespace, first.origin)
    assert received.envelope.source == "first"
    # broadcast in the background, yet under the write's correlation id
    assert received.envelope.correlation_id == "write-1"

    store[2] = "b2"
    assert await second.invalidate(tags=["catalog"]) is True
    await wait_for(dropped(first, 2), within=2.0, interval=0.005)
    assert [await read_first(1), await read_first(2)] == ["a2", "b2"]
    assert await holds(elsewhere, 1)()  # another namespace on the same bus keeps its entries
    assert await read_elsewhere(1) == "a1"
    assert first.unsent_invalidations == second.unsent_invalidations == 0


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    """The ``core.cache`` log records of ``level`` whose message holds ``text``."""
    return [
        record
        for record in caplog.records
        if record.name == "core.cache" and record.levelno == level and text in record.getMessage()
    ]


BUS_AWAY = "cannot announce invalidations: bus away"
BUS_BACK = "announcing invalidations again"


async def test_an_invalidation_does_not_wait_for_a_broker_that_does_not_confirm(
    amqp_bus_kit: BusKit, make_cache: CacheFactory, broker_proxy: BrokerProxy, redis: Redis
) -> None:
    """A broker that holds its confirms (a memory or disk alarm; here a relay holding every
    byte) must not hold the write: the counters are bumped, the broadcast follows later."""
    writer_bus = Bus(
        AmqpTransport(broker_proxy.url, exchange=amqp_bus_kit.exchange, reconnect_delays=(0.05,)),
        source="writer",
    )
    try:
        writer = await on_bus(make_cache, writer_bus)
        reader = await on_bus(make_cache, amqp_bus_kit.bus("reader"))
        store = {1: "old"}
        read_writer, read_reader = catalog(writer, store), catalog(reader, store)
        assert [await read_writer(1), await read_reader(1)] == ["old", "old"]

        broker_proxy.freeze()
        store[1] = "new"
        # returned with the broker still silent: it cannot have waited for its confirm
        assert await writer.invalidate(keys=["item:1"]) is True
        assert await redis.get(writer.keyspace.version("k:item:1")) is not None
        assert writer.unsent_invalidations == 1  # the broadcast is still to be confirmed
        assert await holds(reader, 1)()
        assert await read_writer(1) == "new"

        broker_proxy.thaw()
        await wait_for(dropped(reader, 1), within=10.0, interval=0.01)
        assert await read_reader(1) == "new"

        async def confirmed() -> bool:
            return writer.unsent_invalidations == 0

        await wait_for(confirmed, within=10.0)
    finally:
        broker_proxy.thaw()
        await writer_bus.stop()


async def test_marks_held_while_the_broker_is_away_are_broadcast_once_it_is_back(
    amqp_bus_kit: BusKit,
    make_cache: CacheFactory,
    broker_proxy: BrokerProxy,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The writer reaches RabbitMQ through a relay that the test cuts: a real outage for it."""
    caplog.set_level(logging.DEBUG, logger="core.cache")
    writer_bus = Bus(
        AmqpTransport(broker_proxy.url, exchange=amqp_bus_kit.exchange, reconnect_delays=(0.05,)),
        source="writer",
    )
    try:
        writer = await on_bus(make_cache, writer_bus)
        reader = await on_bus(make_cache, amqp_bus_kit.bus("reader"))
        store = {1: "old", 2: "old", 3: "old"}
        read_writer, read_reader = catalog(writer, store), catalog(reader, store)
        for item in store:
            assert [await read_writer(item), await read_reader(item)] == ["old", "old"]

        await broker_proxy.cut()

        async def disconnected() -> bool:
            return not writer_bus.transport.connected and not writer.listening

        await wait_for(disconnected)
        for item in store:
            store[item] = "new"
            # the counter is bumped: what Redis holds is not served to anyone
            assert await writer.invalidate(keys=[f"item:{item}"]) is True
            assert await redis.get(writer.keyspace.version(f"k:item:{item}")) is not None
            assert await read_writer(item) == "new"  # its own entry went at once
        assert writer.unsent_invalidations == 3
        for item in store:
            assert await holds(reader, item)()

        async def retried_after_the_writes() -> bool:
            return len(records(caplog, logging.DEBUG, "broadcast failed again")) >= 2

        await wait_for(retried_after_the_writes, within=10.0)
        assert len(records(caplog, logging.WARNING, BUS_AWAY)) == 1  # once for the outage
        assert records(caplog, logging.WARNING, "invalidation") == records(
            caplog, logging.WARNING, BUS_AWAY
        )  # and nothing per write

        await broker_proxy.start()
        for item in store:
            await wait_for(dropped(reader, item), within=10.0, interval=0.01)
            assert await read_reader(item) == "new"

        async def resent() -> bool:
            return writer.unsent_invalidations == 0 and writer.listening

        await wait_for(resent)

        async def back() -> bool:
            return bool(records(caplog, logging.INFO, BUS_BACK))

        await wait_for(back)
        assert len(records(caplog, logging.INFO, BUS_BACK)) == 1
        assert len(records(caplog, logging.WARNING, BUS_AWAY)) == 1
    finally:
        await writer_bus.stop()


async def test_marks_held_while_redis_is_away_are_bumped_then_broadcast_once_it_is_back(
    memory_bus_kit: BusKit, make_cache: CacheFactory, redis_process: ServerProcess
) -> None:
    options = {"redis_url": redis_process.url, "breaker_cooldown": 0.1}
    writer = await on_bus(make_cache, memory_bus_kit.bus("writer"), **options)
    reader = await on_bus(make_cache, memory_bus_kit.bus("reader"), **options)
    log = await memory_bus_kit.record(CacheInvalidated)
    store = {1: "old"}
    read_writer, read_reader = catalog(writer, store), catalog(reader, store)
    assert [await read_writer(1), await read_reader(1)] == ["old", "old"]

    await redis_process.stop()
    store[1] = "new"
    assert await writer.invalidate(keys=["item:1"]) is False
    assert writer.unsent_invalidations == 1
    assert log.envelopes == []  # nothing is broadcast before its counter is bumped

    await redis_process.start()  # an empty Redis: the marks are bumped there, then broadcast
    await wait_for(dropped(reader, 1), within=10.0, interval=0.01)
    assert await read_reader(1) == "new"
    assert writer.unsent_invalidations == 0
    async with Redis.from_url(redis_process.url) as client:
        assert await client.get(writer.keyspace.version("k:item:1")) is not None


def catalog_app(
    settings: core.BaseServiceSettings, transport: Transport, **cache: Any
) -> web.Application:
    """An app with a bus and a cache invalidating through it, as the services are wired."""
    return core.create_app(
        "catalog",
        settings,
        resources=[bus_ctx(settings, transport=transport), cache_ctx(settings, **cache)],
    )


async def test_the_services_wiring_invalidates_over_the_bus(
    amqp_bus_kit: BusKit,
    service_client: ClientFactory,
    make_settings: SettingsFactory,
    redis: Redis,
) -> None:
    settings = make_settings()
    apps = [catalog_app(settings, amqp_bus_kit.transport(), invalidation="bus") for _ in range(2)]
    for app in apps:
        await service_client(app)
    first, second = (app[CACHE] for app in apps)

    async def listening() -> bool:
        return first.listening and second.listening

    await wait_for(listening)
    assert await subscribers(redis, first) == 0
    store = {1: "old"}
    read_first, read_second = catalog(first, store), catalog(second, store)
    assert [await read_first(1), await read_second(1)] == ["old", "old"]
    store[1] = "new"
    await first.invalidate(tags=["catalog"])
    await wait_for(dropped(second, 1), within=2.0, interval=0.005)
    assert await read_second(1) == "new"


async def test_on_an_in_memory_bus_the_app_cache_invalidates_over_redis(
    service_client: ClientFactory, make_settings: SettingsFactory, redis: Redis
) -> None:
    """An in-memory transport never leaves its process: other instances are reached by Redis."""
    settings = make_settings()
    app = catalog_app(settings, InMemoryTransport(), invalidation="bus")
    await service_client(app)
    cache = app[CACHE]

    async def subscribed() -> bool:
        return cache.listening and await subscribers(redis, cache) == 1

    await wait_for(subscribed)


async def test_a_cache_on_the_bus_goes_after_the_bus(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    app = core.create_app("catalog", settings, resources=[cache_ctx(settings, invalidation="bus")])
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match="after bus_ctx"):
        await runner.setup()
    await runner.cleanup()
