"""Load balancing over real instance processes: spreading, SIGKILL, rejoining, retries, budget."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from core.testing import assert_problem, wait_for
from tests.gateway.conftest import Client, FakeFactory, GatewayFactory, metric

PUBLIC = ["* /api/v1/products/**"]


async def test_traffic_spreads_over_both_instances(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(upstream_products=f"{a.url},{b.url}")
    responses = await asyncio.gather(*(gateway.get("/api/v1/products/1") for _ in range(200)))
    names = Counter([(await response.json())["name"] for response in responses])
    assert names["a"] > 40, names
    assert names["b"] > 40, names
    assert await metric(gateway, "gateway_upstream_requests_total", instance="products-1") > 40


class Stream:
    """Workers sending GETs back to back through the gateway until stopped."""

    def __init__(self, client: Client, workers: int = 8) -> None:
        self.client = client
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def _work(self) -> None:
        while not self._stop.is_set():
            try:
                response = await self.client.get("/api/v1/products/7")
                if response.status == 200:
                    self.served[(await response.json())["name"]] += 1
                else:
                    self.failures.append(f"{response.status}: {await response.text()}")
            except aiohttp.ClientError as exc:
                self.failures.append(repr(exc))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_sigkill_under_a_steady_stream_is_invisible_and_the_instance_rejoins(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}",
        breaker_cooldown=0.2,
        health_interval=0.1,
        rate_limit_enabled=False,
    )
    stream = Stream(gateway)
    try:
        await wait_for(lambda: _true(stream.served["a"] > 20 and stream.served["b"] > 20))
        await a.kill()
        after_kill = stream.served["b"]
        await wait_for(lambda: _true(stream.served["b"] > after_kill + 200), within=10)
        served_a = stream.served["a"]
        await fake_upstream(restart=a)
        await wait_for(lambda: _true(stream.served["a"] > served_a + 20), within=10)
    finally:
        await stream.stop()
    assert stream.failures == []  # in-flight GETs on the killed instance were retried
    assert await metric(gateway, "gateway_instance_healthy", instance="products-0") == 1


async def _true(value: bool) -> bool:
    return value


async def test_an_instance_failing_readiness_gets_no_traffic_until_it_recovers(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(upstream_products=f"{a.url},{b.url}", unhealthy_threshold=1)
    await a.set_ready(False)

    async def a_is_out() -> bool:
        return await metric(gateway, "gateway_instance_healthy", instance="products-0") == 0

    await wait_for(a_is_out)
    responses = await asyncio.gather(*(gateway.get("/api/v1/products/1") for _ in range(30)))
    assert {(await response.json())["name"] for response in responses} == {"b"}
    await a.set_ready(True)

    async def a_serves() -> bool:
        return (await (await gateway.get("/api/v1/products/1")).json())["name"] == "a"

    await wait_for(a_serves)


async def test_with_no_instance_ready_those_that_answer_still_serve(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    """A dependency every instance shares is down (their /readyz says 503): the gateway sends
    requests to them anyway and relays their answers, 503 included, without ejecting them."""
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}",
        unhealthy_threshold=1,
        eject_after=3,
        rate_limit_enabled=False,
    )
    await a.set_ready(False)
    await b.set_ready(False)

    async def both_out() -> bool:
        healthy = [
            await metric(gateway, "gateway_instance_healthy", instance=f"products-{i}")
            for i in (0, 1)
        ]
        return healthy == [0, 0]

    await wait_for(both_out)
    for _ in range(10):  # the instances' own 503s: relayed, and no breaker opens for them
        response = await gateway.get("/api/v1/products/status/503")
        assert response.status == 503
    responses = await asyncio.gather(*(gateway.get("/api/v1/products/1") for _ in range(30)))
    assert [response.status for response in responses] == [200] * 30
    assert {(await response.json())["name"] for response in responses} == {"a", "b"}
    assert await metric(gateway, "gateway_upstream_panic_routed_total", upstream="products") >= 40
    readiness = await gateway.get("/readyz")
    assert readiness.status == 200  # READY_UPSTREAMS is empty by default

    await a.kill()  # now only b answers: a refused connection is retried there, then a is out
    for _ in range(20):
        response = await gateway.get("/api/v1/products/1")
        assert response.status == 200
        assert (await response.json())["name"] == "b"


async def test_gets_are_retried_on_another_instance(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(upstream_products=f"{a.url},{b.url}", eject_after=100)
    for _ in range(20):
        response = await gateway.get("/api/v1/products/drop-on/a")
        assert response.status == 200
        assert (await response.json())["name"] == "b"
    assert await metric(gateway, "gateway_retries_total", reason="broken") >= 1


async def test_a_post_that_may_have_arrived_is_never_retried(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}", public_routes=PUBLIC, eject_after=100
    )
    await assert_problem(await gateway.get("/api/v1/products/drop"), 502)

    async def attempts() -> int:
        return len(await a.seen()) + len(await b.seen())

    assert await attempts() == 2  # the GET: once on each instance
    await assert_problem(await gateway.post("/api/v1/products/drop", json={"n": 1}), 502)
    assert await attempts() == 3  # the POST: once


async def test_a_refused_connection_is_retried_for_any_method(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}",
        public_routes=PUBLIC,
        health_interval=300,  # only the passive side notices
        eject_after=100,
    )
    await a.kill()
    for i in range(20):
        response = await gateway.post("/api/v1/products/new", json={"i": i})
        assert response.status == 200, await response.text()
    assert len([seen for seen in await b.seen() if seen["method"] == "POST"]) == 20
    assert await metric(gateway, "gateway_retries_total", reason="connect") >= 1


async def test_passive_ejection_opens_the_breaker(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}",
        eject_after=2,
        breaker_cooldown=60,
        health_interval=300,
    )
    for _ in range(20):
        assert (await gateway.get("/api/v1/products/drop-on/a")).status == 200
    assert await metric(gateway, "gateway_breaker_state", instance="products-0") == 2
    seen_by_a = len(await a.seen())
    assert seen_by_a == 2  # two failures, then no more traffic while open
    for _ in range(10):
        assert (await gateway.get("/api/v1/products/1")).status == 200
    assert len(await a.seen()) == seen_by_a


async def test_the_retry_budget_stops_retries(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a, b = await fake_upstream("a"), await fake_upstream("b")
    gateway = await make_gateway(
        upstream_products=f"{a.url},{b.url}",
        retry_budget_ratio=0,
        retry_budget_min_per_second=0,
        eject_after=100,
    )
    await assert_problem(await gateway.get("/api/v1/products/drop"), 502)
    assert len(await a.seen()) + len(await b.seen()) == 1
    assert await metric(gateway, "gateway_retry_budget_exhausted_total") == 1


async def test_no_instance_configured_at_all_is_503(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(upstream_orders="", public_routes=["* /api/v1/orders"])
    body = await assert_problem(await gateway.get("/api/v1/orders"), 503)
    assert body["detail"].startswith("No healthy instance of the orders service")
    assert await metric(gateway, "gateway_no_healthy_instance_total", upstream="orders") == 1


async def test_a_reset_on_the_only_instance_is_retried_there_once(
    fake_upstream: FakeFactory, make_gateway: GatewayFactory
) -> None:
    a = await fake_upstream("a")
    gateway = await make_gateway(upstream_products=a.url, eject_after=100)
    await assert_problem(await gateway.get("/api/v1/products/drop"), 502)
    assert len(await a.seen()) == 2  # a stale keep-alive connection would have been saved
