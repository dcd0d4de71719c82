"""core.middleware.correlation: the X-Correlation-ID of every request and response."""

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

import core
from core import Router
from core.context import get_correlation_id
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit

FRESH = re.compile(r"[0-9a-f]{32}")


def _router() -> Router:
    router = Router()

    @router.get("/cid")
    async def cid(request: web.Request) -> dict[str, Any]:
        return {
            "context": get_correlation_id(),
            "port": request.transport.get_extra_info("peername")[1] if request.transport else None,
        }

    return router


@pytest.fixture
async def client(service_client: ClientFactory, settings: BaseServiceSettings) -> Any:
    return await service_client(core.create_app("t", settings, routers=[_router()]))


@pytest.mark.parametrize(
    "incoming", ["abc", "req-123.alpha:Beta_9", "0" * 128, "6f1c2f4e-0d7b-4d2e-9a57-5d1f6e2f2c3a"]
)
async def test_a_valid_id_is_echoed(client: Any, incoming: str) -> None:
    resp = await client.get("/cid", headers={"X-Correlation-ID": incoming})
    assert resp.headers["X-Correlation-ID"] == incoming
    assert (await resp.json())["context"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        "has space",
        "a" * 129,
        "<script>alert(1)</script>",
        "semi;colon",
        'quote"d',
        "caf\u00e9",
        "",
    ],
)
async def test_an_invalid_id_is_replaced(client: Any, incoming: str) -> None:
    resp = await client.get("/cid", headers={"X-Correlation-ID": incoming})
    replaced = resp.headers["X-Correlation-ID"]
    assert replaced != incoming
    assert FRESH.fullmatch(replaced), replaced
    assert (await resp.json())["context"] == replaced


async def test_a_fresh_id_when_absent(client: Any) -> None:
    first = await client.get("/cid")
    second = await client.get("/cid")
    ids = [first.headers["X-Correlation-ID"], second.headers["X-Correlation-ID"]]
    assert all(FRESH.fullmatch(i) for i in ids), ids
    assert ids[0] != ids[1]
    assert (await first.json())["context"] == ids[0]
    assert (await second.json())["context"] == ids[1]


async def test_the_id_is_in_problem_bodies(client: Any) -> None:
    resp = await client.get("/missing", headers={"X-Correlation-ID": "trace-404"})
    body = await assert_problem(resp, 404)
    assert body["correlation_id"] == "trace-404"

    resp = await client.get("/missing")
    body = await assert_problem(resp, 404)
    assert FRESH.fullmatch(body["correlation_id"])


async def test_the_context_does_not_leak_between_keep_alive_requests(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    seen_before: list[str | None] = []

    @web.middleware
    async def probe(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen_before.append(get_correlation_id())
        return await handler(request)

    app = core.create_app("t", settings, routers=[_router()])
    app.middlewares.insert(0, probe)  # outermost: runs before the correlation middleware
    client = await service_client(app)

    first = await client.get("/cid", headers={"X-Correlation-ID": "first-request"})
    first_body = await first.json()
    second = await client.get("/cid")
    second_body = await second.json()

    # Both requests were served on one connection.
    assert first_body["port"] == second_body["port"]
    assert first_body["context"] == "first-request"
    assert second_body["context"] == second.headers["X-Correlation-ID"]
    assert second_body["context"] != "first-request"
    assert seen_before == [None, None]
    assert get_correlation_id() is None
