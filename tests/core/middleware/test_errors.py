"""core.middleware.errors: every failure becomes problem+json, nothing internal leaks."""

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg
import pytest
import redis.exceptions
from aiohttp import web

import core
from core import Conflict, ProblemError, Router
from core.redis import create_redis
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import CLOSED_REDIS_URL, ClientFactory

SECRET = "password=hunter2 host=10.20.30.40"


class OutOfStock(Conflict):
    title = "Out of stock"
    type = "https://aioshop.example/problems/out-of-stock"


class PaymentRequired(ProblemError):
    status: ClassVar[int] = 402
    title: ClassVar[str] = "Payment Required"


async def _client_raising(
    service_client: ClientFactory, settings: BaseServiceSettings, make_exc: Callable[[], Any]
) -> Any:
    router = Router()

    @router.get("/boom")
    async def boom() -> None:
        raise make_exc()

    return await service_client(core.create_app("t", settings, routers=[router]))


async def test_an_unexpected_error_is_a_500_without_details_and_logs_the_traceback(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await _client_raising(service_client, settings, lambda: RuntimeError(SECRET))
    with caplog.at_level(logging.ERROR, logger="core.errors"):
        resp = await client.get("/boom", headers={"X-Correlation-ID": "boom-1"})
    body = await assert_problem(resp, 500)
    text = await resp.text()
    assert "hunter2" not in text
    assert "10.20.30.40" not in text
    assert "RuntimeError" not in text
    assert body["title"] == "Internal Server Error"
    assert body["instance"] == "/boom"
    assert body["correlation_id"] == "boom-1"

    records = [r for r in caplog.records if r.name == "core.errors"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is RuntimeError
    assert "Traceback" in caplog.text
    assert SECRET in caplog.text


@pytest.mark.parametrize(
    "make_exc",
    [
        pytest.param(
            lambda: asyncpg.PostgresConnectionError(f"connection to {SECRET} failed"),
            id="asyncpg-connection",
        ),
        pytest.param(lambda: asyncpg.CannotConnectNowError(SECRET), id="asyncpg-starting-up"),
        pytest.param(lambda: asyncpg.TooManyConnectionsError(SECRET), id="asyncpg-too-many"),
        pytest.param(lambda: redis.exceptions.ConnectionError(SECRET), id="redis-connection"),
        pytest.param(lambda: redis.exceptions.TimeoutError(SECRET), id="redis-timeout"),
        pytest.param(lambda: ConnectionRefusedError(111, SECRET), id="connection-refused"),
        pytest.param(TimeoutError, id="timeout"),
    ],
)
async def test_a_failed_dependency_is_a_503_with_retry_after(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    make_exc: Callable[[], Any],
) -> None:
    client = await _client_raising(service_client, settings, make_exc)
    resp = await client.get("/boom")
    body = await assert_problem(resp, 503)
    assert int(resp.headers["Retry-After"]) >= 1
    assert body["title"] == "Service Unavailable"
    assert "hunter2" not in await resp.text()


async def test_real_connection_failures_are_503(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/pg")
    async def pg() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:1/postgres", timeout=2)
        await conn.close()

    @router.get("/redis")
    async def redis_down() -> None:
        client = create_redis(CLOSED_REDIS_URL)
        try:
            await client.get("anything")
        finally:
            await client.aclose()

    client = await service_client(core.create_app("t", settings, routers=[router]))
    for path in ("/pg", "/redis"):
        resp = await client.get(path)
        await assert_problem(resp, 503)
        assert resp.headers["Retry-After"] == "1"
        assert ":1" not in await resp.text()


async def test_an_unknown_route_is_a_404_problem(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    client = await service_client(core.create_app("t", settings))
    resp = await client.get("/no/such/thing", headers={"X-Correlation-ID": "nf-1"})
    body = await assert_problem(resp, 404)
    assert body["instance"] == "/no/such/thing"
    assert body["correlation_id"] == "nf-1"


async def test_a_wrong_method_is_a_405_problem_with_allow(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/items")
    async def items() -> list[int]:
        return []

    @router.post("/items")
    async def create() -> None:
        return None

    client = await service_client(core.create_app("t", settings, routers=[router]))
    resp = await client.delete("/items")
    body = await assert_problem(resp, 405)
    assert body["title"] == "Method Not Allowed"
    assert {m.strip() for m in resp.headers["Allow"].split(",")} >= {"GET", "POST"}
    assert "DELETE" not in resp.headers["Allow"]


async def test_problem_subclasses_keep_status_title_type_headers_and_extra(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/orders")
    async def order() -> None:
        raise OutOfStock(
            "Only 2 left", extra={"available": 2}, headers={"X-Stock-Hint": "restock-soon"}
        )

    @router.post("/pay")
    async def pay() -> None:
        raise PaymentRequired()

    client = await service_client(core.create_app("t", settings, routers=[router]))
    resp = await client.post("/orders")
    body = await assert_problem(resp, 409)
    assert body["title"] == "Out of stock"
    assert body["type"] == "https://aioshop.example/problems/out-of-stock"
    assert body["detail"] == "Only 2 left"
    assert body["available"] == 2
    assert resp.headers["X-Stock-Hint"] == "restock-soon"

    resp = await client.post("/pay")
    body = await assert_problem(resp, 402)
    assert body["title"] == "Payment Required"
    assert body["detail"] == "Payment Required"
    assert body["type"] == "about:blank"


async def test_aiohttp_http_errors_become_problems_and_redirects_pass(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/gone")
    async def gone() -> None:
        raise web.HTTPGone()

    @router.get("/old")
    async def old() -> None:
        raise web.HTTPFound("/new")

    client = await service_client(core.create_app("t", settings, routers=[router]))
    body = await assert_problem(await client.get("/gone"), 410)
    assert body["title"] == "Gone"

    resp = await client.get("/old", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/new"


async def test_aiohttp_errors_keep_their_protocol_headers(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    """RFC 9110: a 401 carries WWW-Authenticate; 429 and 503 keep their Retry-After."""
    router = Router()

    @router.get("/login-required")
    async def login_required() -> None:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="aioshop"'})

    @router.get("/busy")
    async def busy() -> None:
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "7"})

    @router.get("/slow-down")
    async def slow_down() -> None:
        raise web.HTTPTooManyRequests(headers={"Retry-After": "30"})

    client = await service_client(core.create_app("t", settings, routers=[router]))
    resp = await client.get("/login-required")
    await assert_problem(resp, 401)
    assert resp.headers.get("WWW-Authenticate") == 'Bearer realm="aioshop"'
    resp = await client.get("/busy")
    await assert_problem(resp, 503)
    assert resp.headers.get("Retry-After") == "7"
    resp = await client.get("/slow-down")
    await assert_problem(resp, 429)
    assert resp.headers.get("Retry-After") == "30"
