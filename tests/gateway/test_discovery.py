"""The gateway finds an upstream's instances by DNS: added ones get traffic, removed ones stop
getting it, without a restart (a DNS server the test controls, instances on 127.0.0.2/.3)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.testing import free_port, wait_for
from gateway.keys import POOLS
from tests.dns_server import ControlledDns, controlled_dns
from tests.gateway.conftest import GatewayFactory

__all__ = ["controlled_dns"]  # the fixture, imported to be used here

NAME = "products.aioshop.test"


def _instance_app(name: str, seen: list[str]) -> web.Application:
    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def anything(request: web.Request) -> web.Response:
        seen.append(name)
        return web.json_response({"instance": name})

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


Instances = Callable[[str], Awaitable[TestServer]]


@pytest.fixture
async def instances() -> AsyncIterator[tuple[int, list[str], Instances]]:
    """Instances of one service on one port, each on its own loopback address."""
    port = free_port()
    seen: list[str] = []
    servers: list[TestServer] = []

    async def start(address: str) -> TestServer:
        server = TestServer(_instance_app(address, seen), host=address, port=port)
        await server.start_server()
        servers.append(server)
        return server

    yield port, seen, start
    for server in servers:
        await server.close()


async def _spread(client: Any, requests: int) -> set[str]:
    answered: set[str] = set()
    for _ in range(requests):
        response = await client.get("/api/v1/products")
        assert response.status == 200, await response.text()
        answered.add((await response.json())["instance"])
    return answered


async def test_instances_come_and_go_with_their_dns_records(
    controlled_dns: ControlledDns,
    instances: tuple[int, list[str], Instances],
    make_gateway: GatewayFactory,
) -> None:
    port, seen, start = instances
    await start("127.0.0.2")
    await start("127.0.0.3")
    controlled_dns.set(NAME, ["127.0.0.2"])
    client = await make_gateway(
        upstream_products=f"dns+http://{NAME}:{port}",
        discovery_nameservers=[controlled_dns.nameserver],
        discovery_interval=0.1,
    )
    assert await _spread(client, 10) == {"127.0.0.2"}

    controlled_dns.set(NAME, ["127.0.0.2", "127.0.0.3"])  # a replica is added

    async def both_serve() -> bool:
        return await _spread(client, 10) == {"127.0.0.2", "127.0.0.3"}

    await wait_for(both_serve)

    controlled_dns.set(NAME, ["127.0.0.3"])  # one is removed
    pool = client.app[POOLS]["products"]

    async def gone_from_the_pool() -> bool:
        return [instance.url for instance in pool.instances] == [f"http://127.0.0.3:{port}"]

    await wait_for(gone_from_the_pool)
    before = seen.count("127.0.0.2")
    assert await _spread(client, 20) == {"127.0.0.3"}
    assert seen.count("127.0.0.2") == before  # not one more request


async def test_an_instance_that_fails_makes_the_gateway_resolve_again(
    controlled_dns: ControlledDns,
    instances: tuple[int, list[str], Instances],
    make_gateway: GatewayFactory,
) -> None:
    port, _, start = instances
    first = await start("127.0.0.2")
    await start("127.0.0.3")
    controlled_dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    client = await make_gateway(
        upstream_products=f"dns+http://{NAME}:{port}",
        discovery_nameservers=[controlled_dns.nameserver],
        discovery_interval=3600,  # only a failure can make it resolve again within the test
    )
    assert await _spread(client, 20) == {"127.0.0.2", "127.0.0.3"}
    asked = controlled_dns.queries
    controlled_dns.set(NAME, ["127.0.0.3"])
    await first.close()  # the instance dies; its health checks and requests fail

    async def resolved_again() -> bool:
        return controlled_dns.queries > asked

    await wait_for(resolved_again)
    pool = client.app[POOLS]["products"]

    async def only_the_live_one() -> bool:
        return [instance.url for instance in pool.instances] == [f"http://127.0.0.3:{port}"]

    await wait_for(only_the_live_one)
    assert await _spread(client, 10) == {"127.0.0.3"}
