"""Assertions and waits shared by tests of core-based services."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientResponse

__all__ = ["assert_problem", "free_port", "refuses_connections", "wait_for"]

T = TypeVar("T")


async def wait_for(
    condition: Callable[[], Awaitable[T]], *, within: float = 5.0, interval: float = 0.02
) -> T:
    """Await ``condition()`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {within} s (last value: {result!r})")
        await asyncio.sleep(interval)


async def assert_problem(response: ClientResponse, status: int) -> dict[str, Any]:
    """Assert ``response`` is RFC 9457 problem+json with ``status``; return its body."""
    body = await response.json(content_type=None)
    assert response.status == status, (response.status, body)
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    for field in ("type", "title", "status", "detail", "instance", "correlation_id"):
        assert field in body, (field, body)
    assert body["status"] == status
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]
    text = str(body).lower()
    for leak in ("traceback", "asyncpg", "select ", "insert ", "127.0.0.1", "postgresql://"):
        assert leak not in text, (leak, body)
    if status == 422:
        assert body["errors"], body
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}, error
    return body  # type: ignore[no-any-return]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (another process may take it since)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def refuses_connections(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (a connection is refused)."""
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False
