"""``CatalogClient`` over several products instances (``PRODUCTS_URL="http://a,http://b"``):
reads spread over them, and one that refuses, drops the connection or answers 503 is followed
at once by the next; a 4xx is the answer. Real sockets: small catalog servers of this file."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.orders.catalog import CatalogClient, CatalogUnavailable

PRODUCT = uuid.uuid4()


def _closed_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


Catalog = Callable[..., Awaitable[tuple[str, list[str]]]]


@pytest.fixture
async def catalog() -> AsyncIterator[Catalog]:
    """Starts catalog servers: ``await catalog(status=200)`` -> its URL and the requests it
    received. ``status=0``: it drops every connection without answering."""
    servers: list[TestServer] = []

    async def start(status: int = 200) -> tuple[str, list[str]]:
        seen: list[str] = []

        async def batch(request: web.Request) -> web.StreamResponse:
            seen.append(request.query["ids"])
            if status == 0:
                assert request.transport is not None
                request.transport.abort()
                raise web.HTTPInternalServerError()
            if status != 200:
                return web.json_response({"status": status}, status=status)
            items = [
                {"id": pid, "price_cents": 250, "currency": "USD"}
                for pid in request.query["ids"].split(",")
            ]
            return web.json_response({"items": items})

        app = web.Application()
        app.router.add_get("/api/v1/products/batch", batch)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/"), seen

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


async def test_reads_take_turns_over_the_instances(
    catalog: Catalog, session: aiohttp.ClientSession
) -> None:
    (first, first_seen), (second, second_seen) = await catalog(), await catalog()
    client = CatalogClient(session, f"{first}, {second}/")
    for _ in range(4):
        prices = await client.prices([PRODUCT])
        assert prices[PRODUCT].price_cents == 250
    assert len(first_seen) == len(second_seen) == 2


@pytest.mark.parametrize("failure", ["refused", "dropped", "503"])
async def test_a_failing_instance_is_followed_by_the_next_at_once(
    failure: str, catalog: Catalog, session: aiohttp.ClientSession
) -> None:
    if failure == "refused":
        broken, broken_seen = _closed_url(), []
    else:
        broken, broken_seen = await catalog(status=0 if failure == "dropped" else 503)
    healthy, healthy_seen = await catalog()
    client = CatalogClient(session, f"{broken},{healthy}")
    for _ in range(4):
        assert (await client.prices([PRODUCT]))[PRODUCT].currency == "USD"
    assert len(healthy_seen) == 4
    # Tried for the first read only (aiohttp may retry a dropped GET once by itself), then
    # last while it cools down: the next reads go to the healthy one first.
    assert len(broken_seen) <= 2


async def test_no_instance_answering_is_a_503(session: aiohttp.ClientSession) -> None:
    client = CatalogClient(session, f"{_closed_url()},{_closed_url()}")
    with pytest.raises(CatalogUnavailable):
        await client.prices([PRODUCT])


async def test_a_4xx_is_the_answer_not_a_reason_to_try_another(
    catalog: Catalog, session: aiohttp.ClientSession
) -> None:
    (refusing, refusing_seen), (healthy, healthy_seen) = await catalog(422), await catalog()
    client = CatalogClient(session, f"{refusing},{healthy}")
    client._turn = iter([0])  # the first read starts with the refusing instance
    with pytest.raises(CatalogUnavailable):
        await client.prices([PRODUCT])
    assert len(refusing_seen) == 1
    assert healthy_seen == []


def test_one_url_at_least() -> None:
    with pytest.raises(ValueError, match="at least one base URL"):
        CatalogClient(None, " , ")  # type: ignore[arg-type]
