"""Slow and idle clients at real servers: the gateway (``python -m gateway``) and the users
service (``aioshop serve users``), each its own process started the one way servers start
(``core.runner.serve``), with small ``HTTP_*_TIMEOUT`` settings."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from core.testing import free_port, wait_for
from tests.core.test_server import MARGIN, RawClient, raw_clients, slow_loris, status_of
from tests.gateway.conftest import CLOSED, ROOT, FakeFactory, ServiceProcess, _serve

__all__ = ["raw_clients"]  # the fixture closing every raw client, used here too

TIMEOUTS = {
    "HTTP_HEADER_TIMEOUT": "2",
    "HTTP_BODY_TIMEOUT": "2",
    "HTTP_KEEPALIVE_TIMEOUT": "3",
}


@pytest.fixture(scope="module")
def users_process(
    gateway_users_dsn: str, redis_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The users service, as its own process, with small client timeouts."""
    env = {
        "USERS_DATABASE_URL": gateway_users_dsn,
        "REDIS_NAMESPACE": f"{redis_namespace}.timeouts",
        **TIMEOUTS,
    }
    yield from _serve("users", env, tmp_path_factory)


@pytest.fixture
async def gateway_port(fake_upstream: FakeFactory, redis_namespace: str) -> AsyncIterator[int]:
    """``python -m gateway`` as its own process, in front of a fake users/products upstream."""
    fake = await fake_upstream("slow")
    port = free_port()
    env = {
        **os.environ,
        "AIOSHOP_ENV": "test",
        "REDIS_NAMESPACE": redis_namespace,
        "UPSTREAM_USERS": fake.url,
        "UPSTREAM_PRODUCTS": fake.url,
        "UPSTREAM_ORDERS": CLOSED,
        "UPSTREAM_WEB": CLOSED,
        "RATE_LIMIT_NAMESPACE": f"{redis_namespace}.timeouts",
        "LOG_LEVEL": "WARNING",
        **TIMEOUTS,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def ready() -> bool:
        assert process.returncode is None, "the gateway exited"
        try:
            async with aiohttp.ClientSession() as session:
                response = await session.get(f"http://127.0.0.1:{port}/healthz")
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    try:
        await wait_for(ready, within=20, interval=0.1)
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


def _port(process: ServiceProcess) -> int:
    return int(process.url.rsplit(":", 1)[1])


async def _cut_off(port: int) -> None:
    client, elapsed = await slow_loris(port, every=1.0, budget=2 + MARGIN)
    assert elapsed is not None, "the slow client was still connected"
    assert 1.5 <= elapsed <= 2 + MARGIN
    assert client.received.startswith(b"HTTP/1.1 408 "), client.received


async def _idle_closed(port: int, path: str) -> None:
    client = await RawClient.connect(port)
    await client.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert status_of(await client.response()) == 200
    assert await client.closed_within(3 + MARGIN) is not None, "the idle connection stayed open"


async def test_the_gateway_cuts_off_a_slow_loris(gateway_port: int) -> None:
    await _cut_off(gateway_port)


async def test_the_gateway_closes_idle_keep_alive_connections(gateway_port: int) -> None:
    await _idle_closed(gateway_port, "/api/v1/products/1")


async def test_the_gateway_still_serves_normal_clients(gateway_port: int) -> None:
    async with aiohttp.ClientSession() as session:
        for n in range(3):
            async with session.get(f"http://127.0.0.1:{gateway_port}/api/v1/products/{n}") as r:
                assert r.status == 200
                assert (await r.json())["name"] == "slow"


async def test_the_gateway_ends_a_stalled_request_body(gateway_port: int) -> None:
    client = await RawClient.connect(gateway_port)
    await client.send(
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    )
    response = await client.response(within=2 + MARGIN)
    assert status_of(response) == 408
    assert b"application/problem+json" in response
    assert await client.closed_within(MARGIN) is not None


async def test_the_gateway_ends_a_stalled_streamed_body(gateway_port: int) -> None:
    # Larger than what the gateway buffers: the body streams upstream as it arrives.
    client = await RawClient.connect(gateway_port)
    await client.send(
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n" + b"x" * 1000
    )
    response = await client.response(within=2 + MARGIN)
    assert status_of(response) == 408, response  # the body's deadline came first: not a 400
    assert b"application/problem+json" in response
    assert await client.closed_within(MARGIN) is not None


async def test_the_users_service_cuts_off_a_slow_loris(users_process: ServiceProcess) -> None:
    await _cut_off(_port(users_process))


async def test_the_users_service_closes_idle_connections(users_process: ServiceProcess) -> None:
    await _idle_closed(_port(users_process), "/healthz")
