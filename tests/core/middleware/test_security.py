"""core.middleware.security: standard headers on every response, errors included."""

from typing import Annotated, Any

import pytest
from aiohttp import web

import core
from core import Body, Router
from core.middleware.security import API_CSP
from core.openapi import DOCS_CSP
from tests.core.conftest import ClientFactory, SettingsFactory

pytestmark = pytest.mark.unit

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
async def client(service_client: ClientFactory, make_settings: SettingsFactory) -> Any:
    router = Router()

    @router.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @router.delete("/ok")
    async def delete() -> None:
        return None

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @router.post("/json")
    async def json_body(payload: Annotated[dict[str, int], Body()]) -> None:
        return None

    @router.get("/framed")
    async def framed() -> web.Response:
        return web.Response(
            text="<p>embeddable</p>",
            content_type="text/html",
            headers={"Content-Security-Policy": "frame-ancestors https://shop.example"},
        )

    settings = make_settings(max_body_bytes=1024, cors_origins=["https://shop.example"])
    return await service_client(core.create_app("t", settings, routers=[router]))


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/ok", {}, 200),
        ("DELETE", "/ok", {}, 204),
        ("GET", "/missing", {}, 404),
        ("PUT", "/ok", {}, 405),
        ("GET", "/boom", {}, 500),
        ("POST", "/json", {"json": {"a": "x"}}, 422),
        ("POST", "/json", {"data": b"{", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/json", {"data": b"x" * 2048}, 413),
        ("GET", "/healthz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/openapi.json", {}, 200),
        (
            "OPTIONS",
            "/ok",
            {
                "headers": {
                    "Origin": "https://shop.example",
                    "Access-Control-Request-Method": "DELETE",
                }
            },
            204,
        ),
    ],
)
async def test_every_response_carries_the_security_headers(
    client: Any, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    resp = await client.request(method, path, **kwargs)
    assert resp.status == status
    for name, value in EXPECTED.items():
        assert resp.headers.get(name) == value, name
    assert resp.headers["Content-Security-Policy"] == API_CSP
    assert resp.headers["X-Correlation-ID"]
    await resp.read()


async def test_a_handler_may_set_its_own_csp(client: Any) -> None:
    resp = await client.get("/framed")
    assert resp.headers["Content-Security-Policy"] == "frame-ancestors https://shop.example"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_docs_page_has_its_own_strict_csp(client: Any) -> None:
    resp = await client.get("/docs")
    assert resp.headers["Content-Security-Policy"] == DOCS_CSP
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_static_assets_carry_the_headers(client: Any) -> None:
    resp = await client.get("/docs/static/swagger-ui.css")
    assert resp.status == 200
    for name, value in EXPECTED.items():
        assert resp.headers.get(name) == value, name
    await resp.read()
