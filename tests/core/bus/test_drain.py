"""A graceful stop, step by step, on real servers (``core.runner``, ``core.bus.app``): on
SIGTERM ``/readyz`` fails while the instance still serves for ``SHUTDOWN_DRAIN_DELAY``, then it
stops accepting, its slow request in flight is answered (or, past ``SHUTDOWN_TIMEOUT``, cut),
its consumer takes no more messages while the handler in progress finishes, and the outbox rows
committed so far are published before the process goes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import aiormq
import asyncpg
import pytest
from aiohttp import web

from core import BaseServiceSettings, create_app
from core.bus import Bus, Delivery, Envelope, Event, Inbox
from core.bus.app import bus_ctx, bus_workers_ctx
from core.db import postgres_ctx
from core.keys import DB_POOL
from core.runner import Site, serve_all
from core.testing import free_port, refuses_connections, wait_for
from tests.core.bus.conftest import AMQP_URL, delete_topology, unique

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")


class Pinged(Event):
    """What the test sends the consumer."""

    event_type = "drain.pinged"

    n: int


class Ponged(Event):
    """What the consumer's handler writes to the outbox."""

    event_type = "drain.ponged"

    n: int


class Flushed(Event):
    """A row committed to the outbox where the relay is not told (no NOTIFY)."""

    event_type = "drain.flushed"


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


async def test_a_slow_request_in_flight_is_answered_while_readyz_fails_first(
    make_settings: Callable[..., BaseServiceSettings],
) -> None:
    port = free_port()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.Response(text="finished")

    app = create_app("drain", make_settings())
    app.router.add_get("/slow", slow)
    server = asyncio.create_task(serve_all([Site(app, "127.0.0.1", port)], drain_delay=1.5))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            assert not server.done(), server
            try:
                async with session.get(f"{base}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(ready)
        in_flight = asyncio.create_task(session.get(f"{base}/slow"))
        await asyncio.wait_for(entered.wait(), 5)
        _stop()
        stopped_at = time.monotonic()

        async def draining() -> bool:
            async with session.get(f"{base}/readyz") as response:
                return response.status == 503 and "draining" in (await response.json())["checks"]

        await wait_for(draining, within=1)
        # Still serving during the delay: a balancer that has not noticed yet is answered.
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        await wait_for(lambda: refuses_connections(port), within=5)
        assert time.monotonic() - stopped_at >= 1.4  # not before the drain delay
        assert not server.done()  # the request in flight holds the shutdown
        release.set()
        response = await asyncio.wait_for(in_flight, 5)
        assert response.status == 200
        assert await response.text() == "finished"
        response.release()
    await asyncio.wait_for(server, 10)


async def test_a_request_that_never_ends_is_cut_after_the_shutdown_timeout(
    make_settings: Callable[..., BaseServiceSettings],
) -> None:
    port = free_port()
    entered = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never")

    app = create_app("drain", make_settings())
    app.router.add_get("/hang", hang)
    server = asyncio.create_task(
        serve_all([Site(app, "127.0.0.1", port)], shutdown_timeout=0.5, drain_delay=5)
    )
    async with aiohttp.ClientSession() as session:

        async def listening() -> bool:
            assert not server.done(), server
            return not await refuses_connections(port)

        await wait_for(listening)
        in_flight = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/hang"))
        await asyncio.wait_for(entered.wait(), 5)
        started = time.monotonic()
        _stop()

        async def draining() -> bool:  # the first signal handled before the second is sent
            async with session.get(f"http://127.0.0.1:{port}/readyz") as readiness:
                return readiness.status == 503

        await wait_for(draining)
        _stop()  # a second signal: no drain delay
        await asyncio.wait_for(server, 5)
        assert time.monotonic() - started < 3  # 0.5 s for the request, not the 5 s delay
        with pytest.raises(aiohttp.ClientError):
            await in_flight


@pytest.fixture
async def names() -> AsyncIterator[tuple[str, str]]:
    """An exchange and a queue (the app's name) of this test alone, deleted after it."""
    exchange, queue = unique("drain"), f"drain-{uuid.uuid4().hex[:12]}"
    yield exchange, queue
    await delete_topology([(queue, (1.0, 5.0, 30.0))], exchanges=[exchange])


async def _queue_counts(connection: aiormq.abc.AbstractConnection, queue: str) -> tuple[int, int]:
    """Messages ready in ``queue`` and its consumers; ``(0, -1)`` while it does not exist (a
    passive declaration of a missing queue closes its channel: one channel per look)."""
    channel = await connection.channel()
    try:
        declared = await channel.queue_declare(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0, -1
    await channel.close()
    return int(declared.message_count or 0), int(declared.consumer_count or 0)


async def test_consumers_stop_then_the_outbox_is_flushed_before_the_process_exits(
    make_settings: Callable[..., BaseServiceSettings],
    bus_dsn: str,
    pool: asyncpg.Pool,
    names: tuple[str, str],
) -> None:
    exchange, queue = names
    settings = make_settings(bus_exchange=exchange, amqp_url=AMQP_URL)
    entered, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    def declare(app: web.Application, bus: Bus) -> None:
        bus.declare_publishes(Pinged, Ponged, Flushed)

        async def on_ping(event: Pinged, delivery: Delivery) -> None:
            entered.set()
            await release.wait()
            handled.append(event.n)
            await delivery.publish(Ponged(n=event.n))  # committed with the inbox's record

        bus.consume(on_ping, inbox=Inbox(app[DB_POOL], consumer="drain"))

    app = create_app(
        queue,
        settings,
        resources=[
            postgres_ctx(bus_dsn, max_size=3),
            bus_ctx(settings, setup=declare),
            # A minute's poll: only a NOTIFY, or the flush at stop, makes it relay a row.
            bus_workers_ctx(bus_dsn, poll_interval=60, flush_timeout=5),
        ],
    )
    port = free_port()
    server = asyncio.create_task(serve_all([Site(app, "127.0.0.1", port)]))
    connection = await aiormq.connect(AMQP_URL)
    try:

        async def consuming() -> bool:
            assert not server.done(), server
            return (await _queue_counts(connection, queue))[1] == 1

        await wait_for(consuming, within=15)  # the app declared the exchange and its queue
        channel = await connection.channel()
        recorder = await channel.queue_declare(exclusive=True, auto_delete=True)
        assert recorder.queue is not None
        await channel.queue_bind(recorder.queue, exchange, routing_key="drain.#")

        async def publish(n: int) -> None:
            envelope = Envelope.wrap(Pinged(n=n), source="test")
            await channel.basic_publish(
                envelope.to_bytes(),
                exchange=exchange,
                routing_key=envelope.type,
                properties=aiormq.spec.Basic.Properties(
                    content_type="application/json", message_id=str(envelope.id)
                ),
            )

        await publish(1)
        await asyncio.wait_for(entered.wait(), 10)
        # A row committed without waking the relay: only the flush at stop sends it.
        flushed = Envelope.wrap(Flushed(), source=queue)
        await pool.execute(
            "INSERT INTO outbox (id, routing_key, envelope) VALUES ($1, $2, $3::text::jsonb)",
            flushed.id,
            flushed.type,
            flushed.to_bytes().decode(),
        )
        _stop()

        async def cancelled() -> bool:  # the consumer left the queue, its handler still runs
            return (await _queue_counts(connection, queue))[1] == 0

        await wait_for(cancelled, within=10)
        await publish(2)  # arrives after the consumer stopped: left in the queue
        assert not server.done()
        release.set()
        await asyncio.wait_for(server, 20)

        assert handled == [1]
        assert (await _queue_counts(connection, queue))[0] == 1
        unsent = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        assert unsent == 0
        received: list[str] = []

        async def both_published() -> bool:
            message = await channel.basic_get(recorder.queue, no_ack=True)
            if message.body:
                received.append(Envelope.from_bytes(message.body).type)
            return {"drain.ponged", "drain.flushed"} <= set(received)

        await wait_for(both_published, within=5)
    finally:
        release.set()
        if not server.done():
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
        await connection.close()
