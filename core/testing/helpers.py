"""Assertions and waits shared by tests of core-based services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import ClientResponse

__all__ = ["assert_problem", "wait_for"]

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
