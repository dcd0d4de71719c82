"""``core.server``: header-read, body-read and keep-alive timeouts, on real sockets.

A core service application is served by ``core.server.app_runner`` on a real port; the clients
are raw sockets that misbehave on purpose (a request head one line a second, a body that stops,
a connection left idle). Deadlines in the assertions are the configured timeout plus a generous
margin for a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from core import BaseServiceSettings, create_app
from core.server import GuardedRequestHandler, ServerTimeouts, app_runner

MARGIN = 6.0  # seconds of slack on a busy 2-core machine, beyond the configured timeout

Serve = Callable[..., Awaitable[int]]


async def _echo(request: web.Request) -> web.Response:
    data = await request.read()
    return web.json_response({"size": len(data)})


async def _slow_body(request: web.Request) -> web.StreamResponse:
    """A response streamed for longer than every client timeout (as a dashboard stream is)."""
    response = web.StreamResponse()
    response.content_type = "text/plain"
    await response.prepare(request)
    for _ in range(6):
        await response.write(b"tick\n")
        await asyncio.sleep(0.5)  # the response's own pace, not a wait for a condition
    await response.write_eof()
    return response


def service_app(settings: BaseServiceSettings) -> web.Application:
    """A core service application with a body-reading and a long-streaming route."""
    app = create_app("timeouts", settings)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/slow", _slow_body)
    return app


@pytest.fixture
async def serve(make_settings: Callable[..., BaseServiceSettings]) -> AsyncIterator[Serve]:
    """``await serve(http_header_timeout=2, ...)``: the port of a served core service app whose
    settings carry these timeouts (``app_runner`` reads them from the app)."""
    runners: list[web.AppRunner] = []

    async def factory(**timeouts: Any) -> int:
        app = service_app(make_settings(**timeouts))
        runner = app_runner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site.port

    yield factory
    for runner in runners:
        await runner.cleanup()


class RawClient:
    """A client on a raw socket: it sends exactly what it is told, when it is told. Every one
    opened is closed after the test (``raw_clients``)."""

    opened_clients: list[RawClient] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = b""
        self.opened = time.monotonic()

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        """Open a connection to ``host:port``."""
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        cls.opened_clients.append(client)
        return client

    async def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` if the server has closed the connection."""
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def closed_within(self, seconds: float) -> float | None:
        """Read until the server closes; the seconds since connecting, or ``None`` if it was
        still open after ``seconds`` more."""
        try:
            async with asyncio.timeout(seconds):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        except TimeoutError:
            return None
        except ConnectionError:
            pass
        return time.monotonic() - self.opened

    async def response(self, within: float = 10.0) -> bytes:
        """One response with a ``Content-Length``: head and body."""
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return head + await self.reader.readexactly(length)

    def close(self) -> None:
        """Close the client's side."""
        self.writer.close()

    async def aclose(self) -> None:
        """Close the client's side and wait until it is closed."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture(autouse=True)
async def raw_clients() -> AsyncIterator[None]:
    """Close every ``RawClient`` a test opened."""
    yield
    while RawClient.opened_clients:
        await RawClient.opened_clients.pop().aclose()


async def slow_loris(
    port: int, *, every: float, budget: float, path: str = "/healthz"
) -> tuple[RawClient, float | None]:
    """Send a request head one header line every ``every`` seconds, never finishing it, until
    the server closes the connection or ``budget`` seconds have passed. Returns the client and
    the seconds it stayed connected (``None``: still connected at the end of the budget)."""
    client = await RawClient.connect(port)
    closed = asyncio.create_task(client.closed_within(budget))
    await client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
    line = 0
    while not closed.done():
        done, _ = await asyncio.wait({closed}, timeout=every)  # the client's pace
        if done:
            break
        line += 1
        if not await client.send(f"X-Slow-{line}: {'x' * 10}\r\n".encode()):
            break
    elapsed = await closed
    client.close()
    return client, elapsed


def status_of(response: bytes) -> int:
    """The status code of a raw response."""
    return int(response.split(b" ", 2)[1])


async def test_a_slow_loris_is_cut_off_at_the_header_timeout(serve: Serve) -> None:
    # Keep-alive far longer than the head's deadline: only the header timeout can end this.
    port = await serve(http_header_timeout=2, http_keepalive_timeout=120)
    client, elapsed = await slow_loris(port, every=1.0, budget=2 + MARGIN)
    assert elapsed is not None, "the slow client was still connected"
    assert 1.5 <= elapsed <= 2 + MARGIN
    assert client.received.startswith(b"HTTP/1.1 408 "), client.received


async def test_a_head_completed_in_time_is_served(serve: Serve) -> None:
    port = await serve(http_header_timeout=2, http_keepalive_timeout=120)
    client = await RawClient.connect(port)
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for line in range(3):
        await asyncio.sleep(0.2)  # a slow but honest client's pace
        await client.send(f"X-Line-{line}: 1\r\n".encode())
    await client.send(b"\r\n")
    assert status_of(await client.response()) == 200
    client.close()


async def test_each_request_head_on_a_connection_gets_its_own_deadline(serve: Serve) -> None:
    port = await serve(http_header_timeout=2, http_keepalive_timeout=120)
    client = await RawClient.connect(port)
    for _ in range(3):
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(await client.response()) == 200
    # Then a slow head on the same connection is cut, with a 408.
    await client.send(b"GET /healthz HTTP/1.1\r\n")
    assert await client.closed_within(2 + MARGIN) is not None
    assert client.received.startswith(b"HTTP/1.1 408 ")


async def test_pipelined_requests_are_all_answered(serve: Serve) -> None:
    port = await serve(http_header_timeout=2)
    client = await RawClient.connect(port)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b'{"a": 1}'
    post = (
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await client.send(request + post + request)
    statuses = [status_of(await client.response()) for _ in range(3)]
    assert statuses == [200, 200, 200]
    client.close()


async def test_an_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    port = await serve(http_keepalive_timeout=1)
    client = await RawClient.connect(port)
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(await client.response()) == 200
    answered = time.monotonic()
    assert await client.closed_within(1 + MARGIN) is not None, "the idle connection stayed open"
    assert time.monotonic() - answered >= 0.9


async def test_a_connection_that_never_sends_is_closed(serve: Serve) -> None:
    port = await serve(http_keepalive_timeout=1)
    client = await RawClient.connect(port)
    elapsed = await client.closed_within(1 + MARGIN)
    assert elapsed is not None
    assert elapsed >= 0.9
    assert client.received == b""


async def test_a_stalled_body_is_a_408_and_the_connection_is_not_kept(serve: Serve) -> None:
    port = await serve(http_body_timeout=1, http_keepalive_timeout=120)
    client = await RawClient.connect(port)
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b"x" * 10
    )
    response = await client.response(within=1 + MARGIN)
    assert status_of(response) == 408
    assert b"application/problem+json" in response
    assert await client.closed_within(MARGIN) is not None


async def test_a_body_sent_in_time_is_read(serve: Serve) -> None:
    port = await serve(http_body_timeout=2)
    client = await RawClient.connect(port)
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n" + b"x" * 10
    )
    await asyncio.sleep(0.3)  # a slow but honest client's pace
    await client.send(b"y" * 10)
    response = await client.response()
    assert status_of(response) == 200
    assert response.endswith(b'{"size": 20}')
    client.close()


async def test_long_responses_outlive_every_client_timeout(serve: Serve) -> None:
    # A response lasting 3 s while head, body and idle deadlines are 1 s: none of them cuts it.
    port = await serve(http_header_timeout=1, http_body_timeout=1, http_keepalive_timeout=1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/slow") as response,
    ):
        assert await response.read() == b"tick\n" * 6


async def test_a_normal_client_works(serve: Serve) -> None:
    port = await serve(http_header_timeout=1, http_keepalive_timeout=1)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.post(f"http://127.0.0.1:{port}/echo", data=b"abc") as response:
                assert response.status == 200
                assert await response.json() == {"size": 3}


def test_timeouts_come_from_the_settings(make_settings: Callable[..., BaseServiceSettings]) -> None:
    settings = make_settings(http_header_timeout=3, http_body_timeout=4, http_keepalive_timeout=5)
    assert ServerTimeouts.from_settings(settings) == ServerTimeouts(3, 4, 5)
    assert ServerTimeouts() == ServerTimeouts(10, 30, 15)
    with pytest.raises(ValueError, match="positive"):
        ServerTimeouts(header=0)


async def test_the_runner_makes_guarded_connections(serve: Serve) -> None:
    port = await serve()
    client = await RawClient.connect(port)
    await client.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status_of(await client.response()) == 200
    client.close()
    assert issubclass(GuardedRequestHandler, web.RequestHandler)


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", "too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", "not valid HTTP"),
    ],
    ids=["long-request-line", "long-header", "malformed-header"],
)
async def test_an_unparseable_request_gets_problem_json(
    serve: Serve, head: bytes, detail: str
) -> None:
    """Such a request never reaches the app: the server itself answers, as the app would."""
    port = await serve()
    client = await RawClient.connect(port)
    assert await client.send(head)
    raw = await client.response()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"400", raw
    assert b"content-type: application/problem+json" in headers.lower(), raw
    assert b"x-correlation-id:" in headers.lower()
    problem = orjson.loads(body)
    assert problem["status"] == 400
    assert detail in problem["detail"]
    assert set(problem) >= {"type", "title", "status", "detail", "instance", "correlation_id"}
    assert b"Traceback" not in body
    assert await client.closed_within(5) is not None
