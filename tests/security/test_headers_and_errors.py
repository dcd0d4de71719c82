"""API8/API7-adjacent hardening (security misconfiguration): security headers on every class of
response the gateway serves (API, problem, docs, dashboard), ``Cache-Control: no-store`` on
token responses, and error bodies without internals, for client errors and for a forced 5xx (an
upstream stopped behind the gateway).
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from core.testing import assert_problem, free_port, wait_for
from tests.gateway.conftest import CLOSED, GatewayFactory, ServiceProcess
from tests.security.conftest import PASSWORD, Session, System, assert_no_leak, spawn, stop


def assert_security_headers(headers: CIMultiDictProxy[str], what: str) -> None:
    """``nosniff``, a framing policy (``X-Frame-Options`` or CSP ``frame-ancestors``) and a
    ``Referrer-Policy``."""
    assert headers.get("X-Content-Type-Options", "").lower() == "nosniff", (what, headers)
    frame = headers.get("X-Frame-Options", "").upper() in ("DENY", "SAMEORIGIN")
    csp = "frame-ancestors" in headers.get("Content-Security-Policy", "")
    assert frame or csp, (what, headers)
    assert headers.get("Referrer-Policy"), (what, headers)


async def test_every_response_class_carries_the_security_headers(session: Session) -> None:
    user = await session.user()
    checks: list[tuple[str, str, dict[str, str], int]] = [
        ("api", "/api/v1/products?limit=1", {}, 200),
        ("api (own profile)", "/api/v1/users/me", user.headers, 200),
        ("problem 401 (edge)", "/api/v1/users/me", {}, 401),
        ("problem 404 (upstream)", f"/api/v1/products/{uuid.uuid4()}", {}, 404),
        ("problem 404 (gateway)", "/no/such/route", {}, 404),
        ("problem 422", "/api/v1/products?limit=0", {}, 422),
        ("docs", "/docs", {}, 200),
        ("openapi", "/openapi.json", {}, 200),
        ("dashboard", "/dashboard", {}, 200),
        ("operations", "/healthz", {}, 200),
    ]
    for what, path, headers, status in checks:
        async with session.http.get(path, headers=headers) as response:
            assert response.status == status, (what, response.status, await response.text())
            assert_security_headers(response.headers, what)
            if status >= 400:
                await assert_problem(response, status)
                assert_no_leak(await response.text())


async def test_no_response_discloses_software_versions(session: Session) -> None:
    """``Server: Python/3.11 aiohttp/3.x`` tells an attacker which CVEs to try: the edge must
    not name its software versions (a bare product name, or no header)."""
    for path in ("/api/v1/products?limit=1", "/api/v1/users/me", "/docs", "/dashboard", "/x"):
        async with session.http.get(path) as response:
            server = response.headers.get("Server", "")
            assert not re.search(r"\d", server), (path, server)
            assert "python" not in server.lower(), (path, server)
            assert "X-Powered-By" not in response.headers, (path, response.headers)


async def test_token_responses_are_never_cached(session: Session) -> None:
    registered = await session.register()
    body = {"email": registered["email"], "password": PASSWORD}
    async with session.http.post("/api/v1/auth/login", json=body) as response:
        assert response.status == 200
        assert "no-store" in response.headers.get("Cache-Control", ""), response.headers
        assert_security_headers(response.headers, "login")
        tokens = await response.json()
    refresh = {"refresh_token": tokens["refresh_token"]}
    async with session.http.post("/api/v1/auth/refresh", json=refresh) as response:
        assert response.status == 200
        assert "no-store" in response.headers.get("Cache-Control", ""), response.headers
        assert_security_headers(response.headers, "refresh")


async def test_client_error_bodies_show_no_internals(session: Session) -> None:
    user = await session.user()
    probes: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("POST", "/api/v1/auth/login", b"{not json", {"Content-Type": "application/json"}),
        ("POST", "/api/v1/auth/login", b"\xff\xfe\x00", {"Content-Type": "application/json"}),
        ("POST", "/api/v1/auth/register", b"[]", {"Content-Type": "application/json"}),
        ("POST", "/api/v1/auth/register", b"a=b", {"Content-Type": "text/plain"}),
        ("GET", "/api/v1/products/not-a-uuid", None, {}),
        ("GET", "/api/v1/products?cursor=%00%ff'--", None, {}),
        ("GET", "/api/v1/products?min_price=-1e999", None, {}),
        ("GET", "/api/v1/orders/../../etc/passwd", None, user.headers),
        ("PATCH", "/api/v1/users/me", b'{"full_name": null}', user.headers),
        ("DELETE", "/api/v1/auth/login", None, {}),
    ]
    for method, path, data, headers in probes:
        async with session.http.request(method, path, data=data, headers=headers) as response:
            text = await response.text()
            assert 400 <= response.status < 500, (method, path, response.status, text[:500])
            assert response.headers["Content-Type"].startswith("application/problem+json"), (
                method,
                path,
                response.headers,
            )
            assert_no_leak(text)


@pytest.fixture
def doomed_products(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A products process of this test alone (the test stops it)."""
    port = free_port()
    env = {
        "AIOSHOP_ENV": "test",
        "BUS_TRANSPORT": "memory",
        "PRODUCTS_DATABASE_URL": system.products_dsn,
        "REDIS_NAMESPACE": system.redis_namespace,
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "services.cli", "serve", "products", "--port", str(port)]
    yield from spawn("doomed-products", cmd, env, tmp_path_factory, port=port)


async def test_an_upstream_that_stops_gives_a_clean_5xx(
    doomed_products: ServiceProcess, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        upstream_products=doomed_products.url, upstream_timeout=2.0, retry_attempts=0
    )
    response = await gateway.get("/api/v1/products?limit=1")
    assert response.status == 200, await response.text()
    await asyncio.to_thread(stop, doomed_products.process)

    async def failed() -> aiohttp.ClientResponse | None:
        answer = await gateway.get("/api/v1/products?limit=1")
        return answer if answer.status >= 500 else None

    failure = await wait_for(failed, within=15, interval=0.2)
    assert failure is not None
    body = await assert_problem(failure, failure.status)
    assert failure.status in (502, 503, 504), body
    assert_no_leak(await failure.text())
    assert_security_headers(failure.headers, "5xx")
    port = doomed_products.url.rsplit(":", 1)[1]
    assert port not in str(body["detail"]), body

    never = await make_gateway(upstream_products=CLOSED)
    unavailable = await never.get(f"/api/v1/products/{uuid.uuid4()}")
    await assert_problem(unavailable, unavailable.status)
    assert unavailable.status in (502, 503), await unavailable.text()
    assert_no_leak(await unavailable.text())
