"""Load shedding at the gateway: a bound on the requests in flight per upstream.

A real gateway (in the test's loop) in front of a real aiohttp server whose product reads wait
on a gate the test opens: requests stay in flight exactly as long as the test wants, so the
bound, the queue and the shedding are seen without timing guesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.testing import assert_problem, wait_for
from gateway.balancer import ConcurrencyLimit
from tests.gateway.conftest import Client, GatewayFactory, metric

PRODUCT = "/api/v1/products/42"


@dataclass
class GatedUpstream:
    """A products upstream whose reads wait until ``gate`` is set; it counts what it sees."""

    url: str = ""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    async def read(self, request: web.Request) -> web.Response:
        self.arrived += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return web.json_response({"id": request.match_info["id"]})


async def _ready(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@pytest.fixture
async def upstream() -> AsyncIterator[GatedUpstream]:
    gated = GatedUpstream()
    app = web.Application()
    app.router.add_get("/api/v1/products/{id}", gated.read)
    app.router.add_get("/readyz", _ready)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    gated.url = str(server.make_url("")).rstrip("/")
    try:
        yield gated
    finally:
        gated.gate.set()  # nothing left hanging at teardown
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session of its own, unlimited: the test decides how many requests are in flight."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


Outcome = tuple[int, dict[str, str], Any]


def _reader(
    session: aiohttp.ClientSession, gateway: Client
) -> Callable[[], Coroutine[Any, Any, Outcome]]:
    url = str(gateway.make_url(PRODUCT))

    async def read() -> Outcome:
        async with session.get(url) as response:
            body = await response.json(content_type=None)
            if response.status == 503:
                await assert_problem(response, 503)
            return response.status, dict(response.headers), body

    return read


async def _gateway(make_gateway: GatewayFactory, upstream: GatedUpstream, **limits: Any) -> Client:
    return await make_gateway(
        upstream_products=upstream.url,
        rate_limit_enabled=False,
        upstream_retry_after=3,
        **limits,
    )


async def test_the_excess_over_the_bound_is_shed_at_once_and_load_passes_again(
    make_gateway: GatewayFactory, upstream: GatedUpstream, session: aiohttp.ClientSession
) -> None:
    gateway = await _gateway(make_gateway, upstream, upstream_max_concurrency=4)
    read = _reader(session, gateway)
    tasks = [asyncio.create_task(read()) for _ in range(10)]

    async def four_held_six_answered() -> bool:
        return upstream.in_flight == 4 and sum(t.done() for t in tasks) == 6

    await wait_for(four_held_six_answered, within=10)
    shed = [t.result() for t in tasks if t.done()]
    for status, headers, body in shed:
        assert status == 503, body
        assert headers["Retry-After"] == "3"
        assert "products" in body["detail"]
    assert await metric(gateway, "gateway_upstream_in_flight", upstream="products") == 4
    assert upstream.arrived == 4  # nothing went past the bound

    upstream.gate.set()
    held = await asyncio.gather(*(t for t in tasks if not t.done()))
    assert [status for status, _, _ in held] == [200] * 4
    # The load is gone: the bound admits again, up to the bound.
    again = await asyncio.gather(*(read() for _ in range(4)))
    assert [status for status, _, _ in again] == [200] * 4
    assert upstream.most_in_flight == 4
    assert await metric(gateway, "gateway_upstream_shed_total", upstream="products") == 6
    assert await metric(gateway, "gateway_upstream_in_flight", upstream="products") == 0


async def test_a_short_queue_waits_for_a_place_and_only_past_it_is_shed(
    make_gateway: GatewayFactory, upstream: GatedUpstream, session: aiohttp.ClientSession
) -> None:
    gateway = await _gateway(
        make_gateway,
        upstream,
        upstream_max_concurrency=2,
        upstream_queue_size=2,
        upstream_queue_timeout=30,
    )
    read = _reader(session, gateway)
    tasks = [asyncio.create_task(read()) for _ in range(6)]

    async def two_held_two_queued_two_shed() -> bool:
        queued = await metric(gateway, "gateway_upstream_queued", upstream="products")
        return upstream.in_flight == 2 and queued == 2 and sum(t.done() for t in tasks) == 2

    await wait_for(two_held_two_queued_two_shed, within=10)
    assert [t.result()[0] for t in tasks if t.done()] == [503, 503]
    assert await metric(gateway, "gateway_upstream_shed_total", reason="queue_full") == 2

    upstream.gate.set()  # the held ones finish; the queued ones take their places
    served = await asyncio.gather(*(t for t in tasks if not t.done()))
    assert [status for status, _, _ in served] == [200] * 4
    assert (upstream.arrived, upstream.most_in_flight) == (4, 2)
    assert await metric(gateway, "gateway_upstream_queued", upstream="products") == 0


async def test_a_queued_request_is_shed_when_no_place_comes_free_in_time(
    make_gateway: GatewayFactory, upstream: GatedUpstream, session: aiohttp.ClientSession
) -> None:
    gateway = await _gateway(
        make_gateway,
        upstream,
        upstream_max_concurrency=1,
        upstream_queue_size=1,
        upstream_queue_timeout=0.2,
    )
    read = _reader(session, gateway)
    held = asyncio.create_task(read())

    async def one_held() -> bool:
        return upstream.in_flight == 1

    await wait_for(one_held, within=10)
    status, headers, _ = await read()
    assert (status, headers["Retry-After"]) == (503, "3")
    assert await metric(gateway, "gateway_upstream_shed_total", reason="queue_timeout") == 1
    assert upstream.arrived == 1
    upstream.gate.set()
    assert (await held)[0] == 200
    assert (await read())[0] == 200


async def test_the_limit_hands_places_to_waiters_in_order_and_survives_cancellation() -> None:
    limit = ConcurrencyLimit(1, queue=2, queue_timeout=30)
    assert limit.try_acquire()
    assert not limit.try_acquire()
    first = asyncio.create_task(limit.wait())
    second = asyncio.create_task(limit.wait())

    async def both_queued() -> bool:
        return limit.queued == 2

    await wait_for(both_queued)
    assert await limit.wait() == "queue_full"  # the queue is bounded too

    # A waiter cancelled before its turn leaves the queue; the place goes to the next one.
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert limit.queued == 1
    limit.release()
    assert await second is None
    assert (limit.in_flight, limit.queued) == (1, 0)

    # A waiter handed the place just as it is cancelled gives the place back.
    third = asyncio.create_task(limit.wait())

    async def one_queued() -> bool:
        return limit.queued == 1

    await wait_for(one_queued)
    limit.release()  # ``second`` is done: its place goes to ``third``...
    third.cancel()  # ... which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await third
    assert (limit.in_flight, limit.queued) == (0, 0)
    assert limit.try_acquire()
