"""core.middleware.cors: preflights and response tagging for the configured origins only."""

from typing import Any

import pytest

import core
from core import Router
from core.testing import assert_problem
from tests.core.conftest import ClientFactory, SettingsFactory

pytestmark = pytest.mark.unit

ALLOWED = "https://shop.example"


def _router() -> Router:
    router = Router()

    @router.get("/items")
    async def items() -> list[int]:
        return [1]

    @router.post("/items", status=201)
    async def create() -> dict[str, int]:
        return {"id": 1}

    return router


async def _client(
    service_client: ClientFactory, make_settings: SettingsFactory, origins: list[str]
) -> Any:
    settings = make_settings(cors_origins=origins)
    return await service_client(core.create_app("t", settings, routers=[_router()]))


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_a_preflight_from_an_allowed_origin(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, [ALLOWED, "https://admin.example"])
    resp = await client.options("/items", headers=_preflight(ALLOWED))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed_headers = {
        h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "idempotency-key", "x-correlation-id"} <= (
        allowed_headers
    )
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in resp.headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["X-Correlation-ID"]
    assert await resp.read() == b""


async def test_a_request_from_an_allowed_origin_is_tagged(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, [ALLOWED])
    resp = await client.post("/items", headers={"Origin": ALLOWED})
    assert resp.status == 201
    assert await resp.json() == {"id": 1}
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Correlation-ID", "Retry-After", "Location"} <= exposed
    assert "Origin" in resp.headers.getall("Vary")


async def test_errors_for_an_allowed_origin_are_tagged_too(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, [ALLOWED])
    resp = await client.get("/missing", headers={"Origin": ALLOWED})
    await assert_problem(resp, 404)
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://shop.example", "https://shop.example.evil", "null"]
)
async def test_other_origins_get_no_cors_headers(
    service_client: ClientFactory, make_settings: SettingsFactory, origin: str
) -> None:
    client = await _client(service_client, make_settings, [ALLOWED])
    resp = await client.get("/items", headers={"Origin": origin})
    assert resp.status == 200
    assert await resp.json() == [1]
    assert "Access-Control-Allow-Origin" not in resp.headers

    resp = await client.options("/items", headers=_preflight(origin))
    assert resp.status != 204
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Methods" not in resp.headers
    await resp.read()


async def test_no_origin_no_cors_headers(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, [ALLOWED])
    resp = await client.get("/items")
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    await resp.read()


async def test_no_configured_origins_means_no_cors(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, [])
    resp = await client.options("/items", headers=_preflight(ALLOWED))
    assert resp.status == 405
    assert "Access-Control-Allow-Origin" not in resp.headers
    await resp.read()


async def test_a_wildcard_allows_any_origin_without_credentials(
    service_client: ClientFactory, make_settings: SettingsFactory
) -> None:
    client = await _client(service_client, make_settings, ["*"])
    for origin in ("https://anyone.example", "http://localhost:5173"):
        resp = await client.get("/items", headers={"Origin": origin})
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in resp.headers
        await resp.read()

        resp = await client.options("/items", headers=_preflight(origin, "DELETE"))
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
