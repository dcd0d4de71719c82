"""``CatalogClient`` finding the products instances by DNS (``PRODUCTS_URL=dns+http://name:port``):
a new address gets reads, a removed one stops getting them, and an instance that fails makes it
resolve again, without a restart. A DNS server the test controls; instances on 127.0.0.2/.3."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.discovery import DnsResolver
from core.testing import free_port, wait_for
from services.orders.catalog import CatalogClient, CatalogUnavailable
from tests.dns_server import ControlledDns, controlled_dns

__all__ = ["controlled_dns"]  # the fixture, imported to be used here

NAME = "products.aioshop.test"
PRODUCT = uuid.uuid4()


class Instances:
    """Catalog servers on one port, each on a loopback address of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[str] = []
        self.servers: dict[str, TestServer] = {}

    async def start(self, address: str) -> None:
        async def batch(request: web.Request) -> web.Response:
            self.seen.append(address)
            items = [
                {"id": pid, "price_cents": 250, "currency": "USD"}
                for pid in request.query["ids"].split(",")
            ]
            return web.json_response({"items": items})

        app = web.Application()
        app.router.add_get("/api/v1/products/batch", batch)
        server = TestServer(app, host=address, port=self.port)
        await server.start_server()
        self.servers[address] = server


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    found = Instances()
    yield found
    for server in found.servers.values():
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


async def _read(client: CatalogClient, times: int) -> None:
    for _ in range(times):
        assert (await client.prices([PRODUCT]))[PRODUCT].price_cents == 250


async def test_reads_follow_the_dns_records(
    controlled_dns: ControlledDns, instances: Instances, session: aiohttp.ClientSession
) -> None:
    await instances.start("127.0.0.2")
    await instances.start("127.0.0.3")
    controlled_dns.set(NAME, ["127.0.0.2"])
    client = CatalogClient(
        session,
        f"dns+http://{NAME}:{instances.port}",
        resolver=DnsResolver([controlled_dns.nameserver], timeout=1),
        discovery_interval=0.1,
    )
    await client.start()
    try:
        await _read(client, 4)
        assert set(instances.seen) == {"127.0.0.2"}

        controlled_dns.set(NAME, ["127.0.0.2", "127.0.0.3"])

        async def both_read() -> bool:
            instances.seen.clear()
            await _read(client, 4)
            return set(instances.seen) == {"127.0.0.2", "127.0.0.3"}

        await wait_for(both_read)

        controlled_dns.set(NAME, ["127.0.0.3"])

        async def only_the_new_one() -> bool:
            return client.base_urls == [f"http://127.0.0.3:{instances.port}"]

        await wait_for(only_the_new_one)
        instances.seen.clear()
        await _read(client, 6)
        assert set(instances.seen) == {"127.0.0.3"}
    finally:
        await client.stop()


async def test_a_failed_instance_makes_it_resolve_again(
    controlled_dns: ControlledDns, instances: Instances, session: aiohttp.ClientSession
) -> None:
    await instances.start("127.0.0.2")
    await instances.start("127.0.0.3")
    controlled_dns.set(NAME, ["127.0.0.2", "127.0.0.3"])
    client = CatalogClient(
        session,
        f"dns+http://{NAME}:{instances.port}",
        resolver=DnsResolver([controlled_dns.nameserver], timeout=1),
        discovery_interval=3600,  # only a failure makes it resolve again within the test
    )
    await client.start()
    try:
        asked = controlled_dns.queries
        controlled_dns.set(NAME, ["127.0.0.3"])
        await instances.servers.pop("127.0.0.2").close()
        await _read(client, 4)  # the dead one fails over to the live one: no read fails

        async def resolved_again() -> bool:
            return client.base_urls == [f"http://127.0.0.3:{instances.port}"]

        await wait_for(resolved_again)
        assert controlled_dns.queries > asked
    finally:
        await client.stop()


async def test_no_instance_found_is_a_503(
    controlled_dns: ControlledDns, session: aiohttp.ClientSession
) -> None:
    client = CatalogClient(
        session,
        f"dns+http://{NAME}:8002",
        resolver=DnsResolver([controlled_dns.nameserver], timeout=1),
    )
    await client.start()  # NXDOMAIN: no instance
    try:
        with pytest.raises(CatalogUnavailable):
            await client.prices([PRODUCT])
    finally:
        await client.stop()
