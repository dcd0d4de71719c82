"""core.middleware.errors: every failure becomes problem+json, nothing internal leaks."""

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import aiohttp
import aiomcache
import aiormq
import asyncpg
import pytest
import redis.exceptions
from aiohttp import web

import core
from core import Conflict, ProblemError, Router
from core.bus import PublishError, PublishTimeout
from core.errors import GatewayTimeout
from core.middleware.errors import is_dependency_error
from core.redis import create_redis
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import CLOSED_REDIS_URL, POSTGRES_DSN, ClientFactory

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
        pytest.param(
            lambda: asyncpg.ConnectionDoesNotExistError(SECRET), id="asyncpg-connection-lost"
        ),
        pytest.param(lambda: asyncpg.InterfaceError("pool is closed"), id="asyncpg-pool-closed"),
        pytest.param(
            lambda: asyncpg.InterfaceError("cannot perform operation: connection is closed"),
            id="asyncpg-connection-closed",
        ),
        pytest.param(lambda: redis.exceptions.TimeoutError(SECRET), id="redis-timeout"),
        pytest.param(lambda: aiormq.exceptions.AMQPConnectionError(SECRET), id="amqp-connection"),
        pytest.param(lambda: aiormq.exceptions.ConnectionClosed(320, SECRET), id="amqp-closed"),
        pytest.param(lambda: PublishError(SECRET), id="bus-publish"),
        pytest.param(lambda: PublishTimeout(SECRET), id="bus-publish-timeout"),
        pytest.param(
            lambda: aiomcache.ClientException("get failed", b""), id="memcached-connection-lost"
        ),
        pytest.param(lambda: ConnectionRefusedError(111, SECRET), id="connection-refused"),
        pytest.param(lambda: ConnectionResetError(104, SECRET), id="connection-reset"),
        pytest.param(lambda: BrokenPipeError(32, SECRET), id="broken-pipe"),
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


@pytest.mark.parametrize(
    "make_exc",
    [
        pytest.param(lambda: OSError(SECRET), id="oserror"),
        pytest.param(lambda: FileNotFoundError(2, SECRET), id="file-not-found"),
        pytest.param(lambda: PermissionError(13, SECRET), id="permission"),
        pytest.param(lambda: KeyError(SECRET), id="keyerror"),
        pytest.param(lambda: TimeoutError(SECRET), id="bare-timeout"),
        pytest.param(lambda: socket.gaierror(-2, SECRET), id="name-resolution"),
        pytest.param(
            lambda: asyncpg.InterfaceError("cannot perform operation: another operation is in"),
            id="asyncpg-misuse",
        ),
        pytest.param(lambda: aiomcache.ValidationException("invalid key", b""), id="mc-key"),
        pytest.param(lambda: aiomcache.ClientException("duplicate keys"), id="mc-misuse"),
        pytest.param(lambda: aiormq.exceptions.ChannelClosed(406, SECRET), id="amqp-channel"),
    ],
)
async def test_any_other_error_is_a_500_logged_once_with_the_correlation_id(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    caplog: pytest.LogCaptureFixture,
    make_exc: Callable[[], BaseException],
) -> None:
    """An OSError is not a dependency failure by itself: a missing file is a bug, not a 503."""
    expected = type(make_exc())
    assert not is_dependency_error(make_exc())
    client = await _client_raising(service_client, settings, make_exc)
    with caplog.at_level(logging.DEBUG):
        resp = await client.get("/boom", headers={"X-Correlation-ID": "bug-1"})
    body = await assert_problem(resp, 500)
    assert body["correlation_id"] == "bug-1"
    assert "hunter2" not in await resp.text()
    assert "Retry-After" not in resp.headers
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    (record,) = tracebacks
    assert record.name == "core.errors"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is expected
    assert getattr(record, "correlation_id", None) == "bug-1"


async def _refused_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound, then released: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_and_closed_connections_of_every_dependency_are_503(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Real sockets: a refused port, as each client library reports it, and a closed pool."""
    port = await _refused_port()
    router = Router()

    @router.get("/socket")
    async def raw_socket() -> None:
        await asyncio.open_connection("127.0.0.1", port)

    @router.get("/amqp")
    async def amqp() -> None:
        connection = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        await connection.close()

    @router.get("/memcached")
    async def memcached() -> None:
        client = aiomcache.Client("127.0.0.1", port)
        try:
            await client.get(b"anything")
        finally:
            await client.close()

    @router.get("/pool-closed")
    async def pool_closed() -> None:
        pool = await asyncpg.create_pool(POSTGRES_DSN, min_size=1, max_size=1)
        await pool.close()
        await pool.fetchval("SELECT 1")

    @router.get("/pool-exhausted")
    async def pool_exhausted() -> None:
        # A TimeoutError, not a ConnectionError: a dependency's all the same, since it is
        # raised inside asyncpg (a plain TimeoutError of our own code is a 500, above).
        pool = await asyncpg.create_pool(POSTGRES_DSN, min_size=1, max_size=1)
        try:
            async with pool.acquire():
                await pool.acquire(timeout=0.05)
        finally:
            await pool.close()

    client = await service_client(core.create_app("t", settings, routers=[router]))
    for name in ("socket", "amqp", "memcached", "pool-closed", "pool-exhausted"):
        correlation_id = f"dependency-{name}"
        with caplog.at_level(logging.DEBUG):
            resp = await client.get(f"/{name}", headers={"X-Correlation-ID": correlation_id})
        body = await assert_problem(resp, 503)
        assert resp.headers["Retry-After"] == "1"
        assert str(port) not in await resp.text()
        assert body["correlation_id"] == correlation_id
        assert not [r for r in caplog.records if r.exc_info is not None], name  # no traceback
        warned = [r for r in caplog.records if r.name == "core.errors"]
        assert [getattr(r, "correlation_id", None) for r in warned] == [correlation_id]
        caplog.clear()


@pytest.fixture
async def slow_upstream(
    service_client: ClientFactory,
) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A real HTTP server whose ``/slow`` answers only once the test sets the event."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    upstream = web.Application()
    upstream.router.add_get("/slow", slow)
    client = await service_client(upstream)
    yield str(client.make_url("/slow")), release
    release.set()


async def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    slow_upstream: tuple[str, asyncio.Event],
) -> None:
    url, _ = slow_upstream
    router = Router()

    @router.get("/relay")
    async def relay() -> str:
        timeout = aiohttp.ClientTimeout(total=0.2)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                return await response.text()
        except TimeoutError as exc:
            raise GatewayTimeout("The upstream did not answer in time") from exc

    client = await service_client(core.create_app("t", settings, routers=[router]))
    resp = await client.get("/relay")
    body = await assert_problem(resp, 504)
    assert body["title"] == "Gateway Timeout"
    assert body["detail"] == "The upstream did not answer in time"


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
