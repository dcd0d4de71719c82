"""metrics.snapshot: what an instance says of itself, over the in-memory bus and RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiormq
import pytest
from aiohttp import web
from redis.asyncio import Redis

import core
from core import Router
from core.bus import Bus, InMemoryTransport, Message, bus_ctx
from core.bus.amqp import AmqpTransport
from core.cache import CACHE, Cache, cache_ctx, cached
from core.metrics import RequestWindow
from core.snapshot import SNAPSHOT, MetricsSnapshot, add_figures
from core.testing import wait_for
from tests.core.conftest import ClientFactory, SettingsFactory

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
UNREACHABLE_AMQP_URL = "amqp://guest:guest@127.0.0.1:1/"


def _router() -> Router:
    router = Router()

    @router.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/boom")
    async def boom() -> dict[str, bool]:
        raise RuntimeError("an unexpected failure")

    return router


@pytest.fixture(autouse=True)
def fast_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_SNAPSHOT_INTERVAL", "0.1")


@pytest.fixture
async def listener() -> AsyncIterator[tuple[InMemoryTransport, list[MetricsSnapshot]]]:
    """A shared in-memory transport and the snapshots an outside subscriber received."""
    transport = InMemoryTransport()
    outside = Bus(transport, source="outside")
    received: list[MetricsSnapshot] = []

    async def collect(message: Message) -> None:
        assert isinstance(message.event, MetricsSnapshot)
        received.append(message.event)

    outside.subscribe("metrics.snapshot", collect, queue="outside", events=[MetricsSnapshot])
    await outside.start()
    yield transport, received
    await outside.stop()


def test_request_window_percentiles_are_nearest_rank() -> None:
    window = RequestWindow()
    for ms in range(1, 101):  # 1..100 ms, statuses mixed
        window.observe(500 if ms % 50 == 0 else 404 if ms % 10 == 0 else 200, ms / 1000)
    stats = window.take()
    assert stats.count == 100
    assert stats.server_errors == 2
    assert stats.client_errors == 8
    assert (stats.p50, stats.p95, stats.p99) == (0.05, 0.095, 0.099)
    empty = window.take()
    assert (empty.count, empty.p50, empty.p99) == (0, None, None)


async def test_snapshots_carry_the_requests_latency_and_errors_of_each_interval(
    service_client: ClientFactory,
    make_settings: SettingsFactory,
    listener: tuple[InMemoryTransport, list[MetricsSnapshot]],
) -> None:
    transport, received = listener
    settings = make_settings()
    app = core.create_app(
        "snappy", settings, routers=[_router()], resources=[bus_ctx(settings, transport=transport)]
    )
    client = await service_client(app)
    for path in ["/ok"] * 8 + ["/boom", "/nope"]:
        await (await client.get(path)).read()

    def mine() -> list[MetricsSnapshot]:
        return [s for s in received if s.instance == app[SNAPSHOT].instance]

    async def all_counted() -> bool:
        return sum(s.requests.count for s in mine()) >= 10

    await wait_for(all_counted, within=5)
    snapshots = mine()
    assert {s.service for s in snapshots} == {"snappy"}
    assert sum(s.errors.server for s in snapshots) == 1
    assert sum(s.errors.client for s in snapshots) == 1
    busy = [s for s in snapshots if s.requests.count]
    for snapshot in busy:
        assert snapshot.requests.p50_ms is not None
        assert snapshot.requests.p95_ms is not None
        assert snapshot.requests.p99_ms is not None
        assert 0 < snapshot.requests.p50_ms <= snapshot.requests.p95_ms <= snapshot.requests.p99_ms
        assert snapshot.requests.rate > 0
    last = snapshots[-1]
    assert last.process.rss_bytes > 10 * 2**20
    assert last.process.cpu_percent >= 0
    assert last.bus is not None
    assert last.bus.connected
    assert last.started_at <= last.at
    assert 0.05 < last.interval < 5.0
    assert last.instance.startswith(last.host)


async def test_business_figures_merge_providers_and_leave_out_a_failing_one(
    make_settings: SettingsFactory,
) -> None:
    app = core.create_app("figures", make_settings())
    calls = {"cached": 0}

    async def registrations(app: web.Application) -> Mapping[str, Any]:
        return {"registrations": 3}

    async def cached(app: web.Application) -> Mapping[str, Any]:
        calls["cached"] += 1
        return {"orders_by_status": {"confirmed": calls["cached"]}}

    async def broken(app: web.Application) -> Mapping[str, Any]:
        raise RuntimeError("the database is gone")

    async def slow(app: web.Application) -> Mapping[str, Any]:
        await asyncio.sleep(5)  # longer than the figures timeout: left out
        return {"never": 1}

    add_figures(app, registrations)
    add_figures(app, cached, every=60)
    add_figures(app, broken)
    add_figures(app, slow)
    first = await app[SNAPSHOT].take(figures_timeout=0.1)
    second = await app[SNAPSHOT].take(figures_timeout=0.1)
    assert first.business == {"registrations": 3, "orders_by_status": {"confirmed": 1}}
    assert second.business == first.business  # the cached provider did not run again
    assert calls["cached"] == 1
    assert first.bus is None  # an app without a bus
    assert first.cache == {}


async def test_snapshots_are_dropped_not_queued_when_the_broker_is_down(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    transport = AmqpTransport(
        UNREACHABLE_AMQP_URL, publish_timeout=2.0, reconnect_delays=(0.05,), connect_timeout=1
    )
    app = core.create_app(
        "offline", settings, routers=[_router()], resources=[bus_ctx(settings, transport=transport)]
    )
    client = await service_client(app)
    snapshots = app[SNAPSHOT]

    async def dropped_some() -> bool:
        return snapshots.dropped >= 3

    await wait_for(dropped_some, within=5)
    started = time.monotonic()
    response = await client.get("/ok")
    assert response.status == 200
    assert time.monotonic() - started < 1.0  # never waits for the bus (publish_timeout: 2 s)
    assert snapshots.sent == 0
    assert app[core.BUS].metrics.totals["published"] == 0


async def test_the_snapshot_event_is_in_asyncapi(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    app = core.create_app(
        "documented", settings, resources=[bus_ctx(settings, transport=InMemoryTransport())]
    )
    client = await service_client(app)
    document = await (await client.get("/asyncapi.json")).json()
    assert document["channels"]["metrics_snapshot"]["address"] == "metrics.snapshot"
    schema = document["components"]["schemas"]["MetricsSnapshot"]
    for name in ("service", "instance", "started_at", "requests", "errors", "process", "cache"):
        assert name in schema["properties"], name
    assert "publish_metrics_snapshot" in document["operations"]


async def test_snapshots_reach_a_subscriber_over_rabbitmq(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    suffix = uuid.uuid4().hex[:8]
    exchange, queue = f"test-snapshot-{suffix}", f"test-snapshot-watch-{suffix}"
    settings = make_settings(bus_transport="amqp")
    publisher = AmqpTransport(AMQP_URL, exchange=exchange)
    app = core.create_app(
        "rabbit", settings, routers=[_router()], resources=[bus_ctx(settings, transport=publisher)]
    )
    watcher = Bus(AmqpTransport(AMQP_URL, exchange=exchange), source="watcher")
    received: list[MetricsSnapshot] = []

    async def collect(message: Message) -> None:
        assert isinstance(message.event, MetricsSnapshot)
        received.append(message.event)

    watcher.subscribe("metrics.snapshot", collect, queue=queue, events=[MetricsSnapshot])
    await watcher.start()
    try:
        client = await service_client(app)
        for _ in range(5):
            await (await client.get("/ok")).read()

        async def counted() -> bool:
            return sum(s.requests.count for s in received if s.service == "rabbit") >= 5

        await wait_for(counted, within=10)
        assert all(s.instance == app[SNAPSHOT].instance for s in received)
        assert received[-1].bus is not None
        assert received[-1].bus.connected
    finally:
        await watcher.stop()
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel()
        for name in (
            queue,
            f"{queue}.parked",
            *(f"{queue}.retry.{ms}" for ms in (1000, 5000, 30000)),
        ):
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
        await connection.close()


class _Catalog:
    """A cached function of the app, to count its cache tiers."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    @cached(cache=lambda self: self.cache, ttl=60, key="shelf:{name}", name="snapshot.shelf")
    async def shelf(self, name: str) -> dict[str, str]:
        return {"name": name}


async def test_snapshots_count_cache_hits_and_misses_per_tier(
    service_client: ClientFactory, make_settings: SettingsFactory, redis: Redis
) -> None:
    settings = make_settings(cache_tiers=("memory", "redis"))
    app = core.create_app("shelves", settings, resources=[cache_ctx(settings)])
    await service_client(app)
    catalog = _Catalog(app[CACHE])
    for _ in range(4):
        await catalog.shelf("a")  # one load, then three in-process hits
    snapshot = await app[SNAPSHOT].take()
    memory, remote = snapshot.cache["memory"], snapshot.cache["redis"]
    assert (memory.hits, memory.misses) == (3, 1)
    assert memory.ratio == 0.75
    assert (remote.hits, remote.misses) == (0, 1)
    assert remote.ratio == 0.0
