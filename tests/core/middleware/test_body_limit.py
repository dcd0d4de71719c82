"""core.middleware.body_limit and client_max_size: bodies over the limit are 413."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest

import core
from core import Body, Router
from core.testing import assert_problem
from tests.core.conftest import ClientFactory, SettingsFactory

pytestmark = pytest.mark.unit

LIMIT = 1024


@pytest.fixture
def calls() -> list[int]:
    return []


@pytest.fixture
async def client(
    service_client: ClientFactory, make_settings: SettingsFactory, calls: list[int]
) -> Any:
    router = Router()

    @router.post("/upload")
    async def upload(payload: Annotated[dict[str, str], Body()]) -> dict[str, int]:
        calls.append(len(payload["data"]))
        return {"received": len(payload["data"])}

    @router.post("/ignore")
    async def ignore() -> None:
        calls.append(0)

    settings = make_settings(max_body_bytes=LIMIT)
    return await service_client(core.create_app("t", settings, routers=[router]))


def _json_of_size(size: int) -> bytes:
    overhead = len(b'{"data": ""}')
    return b'{"data": "' + b"x" * (size - overhead) + b'"}'


async def test_a_body_within_the_limit_is_read(client: Any, calls: list[int]) -> None:
    body = _json_of_size(LIMIT)
    assert len(body) == LIMIT
    resp = await client.post("/upload", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"received": LIMIT - 12}
    assert calls == [LIMIT - 12]


async def test_a_declared_length_over_the_limit_is_413_before_the_handler(
    client: Any, calls: list[int]
) -> None:
    body = _json_of_size(LIMIT + 1)
    resp = await client.post("/upload", data=body, headers={"Content-Type": "application/json"})
    problem = await assert_problem(resp, 413)
    assert problem["title"] == "Payload Too Large"
    assert calls == []

    # Even a route that never reads its body refuses it.
    resp = await client.post("/ignore", data=b"x" * (LIMIT * 4))
    await assert_problem(resp, 413)
    assert calls == []


async def test_a_declared_length_is_refused_without_reading_the_body(client: Any) -> None:
    """The headers alone announce 100 MB; the answer comes before any of it is sent."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\n"
            b"Host: test\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n"
            b"\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413 "), status_line
    assert b"application/problem+json" in head.lower()


async def test_a_chunked_body_over_client_max_size_is_413(client: Any, calls: list[int]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    resp = await client.post("/upload", data=chunks(), headers={"Content-Type": "application/json"})
    assert "Content-Length" not in resp.request_info.headers
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    problem = await assert_problem(resp, 413)
    assert problem["detail"] == "The request body is too large"
    assert calls == []


async def test_a_small_chunked_body_is_accepted(client: Any, calls: list[int]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        yield b"y" * 100
        yield b'"}'

    resp = await client.post("/upload", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"received": 100}
    assert calls == [100]
