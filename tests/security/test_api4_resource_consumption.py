"""API4 (unrestricted resource consumption), through the gateway of the real system: bodies over
the limit, page sizes, deeply nested JSON, login floods, many streams and a slow client.

Streams and slow clients are the edge's own tests (``tests/gateway/test_streams.py``,
``tests/gateway/test_timeouts.py``, ``tests/core/test_server.py``); here, one light check each
that the protection is switched on in the assembled system.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from core.testing import assert_problem, wait_for
from tests.gateway.conftest import GatewayFactory
from tests.security.conftest import PASSWORD, Session, System, assert_no_leak

MIB = 1024 * 1024


async def test_a_body_over_the_limit_is_413(session: Session) -> None:
    user = await session.user()
    huge = b'{"full_name": "' + b"x" * (2 * MIB) + b'"}'
    headers = {"Content-Type": "application/json"}
    async with session.http.post(
        "/api/v1/auth/register", data=io.BytesIO(huge), headers=headers
    ) as resp:
        await assert_problem(resp, 413)
    async with session.http.post(
        "/api/v1/orders", data=io.BytesIO(huge), headers={**headers, **user.headers}
    ) as resp:
        await assert_problem(resp, 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 65536

    async with session.http.patch(
        "/api/v1/users/me", data=chunks(), headers={**headers, **user.headers}
    ) as resp:
        assert resp.status == 413, await resp.text()
    session.system.assert_alive()


@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/categories", "/api/v1/orders"])
@pytest.mark.parametrize("limit", ["1000000000", "101", "0", "-1", "1e9", "99999999999999999999"])
async def test_page_sizes_are_bounded(session: Session, path: str, limit: str) -> None:
    admin = await session.user("admin")
    async with session.http.get(path, params={"limit": limit}, headers=admin.headers) as resp:
        await assert_problem(resp, 422)


async def test_deeply_nested_json_is_refused_without_harm(session: Session) -> None:
    manager = await session.user("catalog_manager")
    depth = 100_000
    arrays = b"[" * depth + b"]" * depth
    objects = b'{"a":' * depth + b"1" + b"}" * depth
    product = b'{"sku": "SEC-NEST", "name": "n", "price_cents": 1, "attributes": ' + objects + b"}"
    headers = {"Content-Type": "application/json"}
    for path, body, extra in (
        ("/api/v1/auth/register", arrays, {}),
        ("/api/v1/auth/login", objects, {}),
        ("/api/v1/products", product, manager.headers),
        ("/api/v1/orders", arrays, manager.headers),
    ):
        async with session.http.post(path, data=body, headers={**headers, **extra}) as resp:
            text = await resp.text()
            assert 400 <= resp.status < 500, (path, resp.status, text[:500])
            assert_no_leak(text)
    session.system.assert_alive()
    for path in ("/healthz", "/readyz", "/api/v1/products?limit=1"):
        async with session.http.get(path) as resp:
            assert resp.status == 200, (path, await resp.text())


async def test_a_login_flood_on_one_account_is_throttled(session: Session) -> None:
    user = await session.user()
    statuses: list[int] = []
    retry_after: str | None = None
    for _ in range(12):
        body = {"email": user.email, "password": "not the password"}
        async with session.http.post("/api/v1/auth/login", json=body) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                await assert_problem(resp, 429)
                retry_after = resp.headers.get("Retry-After")
                break
            await assert_problem(resp, 401)
    assert statuses[-1] == 429, statuses
    assert retry_after is not None
    assert int(retry_after) >= 1
    # The right password is throttled alike while the delay runs: no oracle for the guesser.
    async with session.http.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    ) as resp:
        assert resp.status == 429


async def test_a_login_flood_from_one_address_is_limited_at_the_edge(
    system: System, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(upstream_users=system.users.url, rate_limit_auth="5/60")
    statuses = []
    for i in range(8):
        body = {"email": f"flood-{i}-{uuid.uuid4().hex[:6]}@example.com", "password": "x" * 9}
        response = await gateway.post("/api/v1/auth/login", json=body)
        statuses.append(response.status)
        if response.status == 429:
            await assert_problem(response, 429)
            assert int(response.headers["Retry-After"]) >= 1
    assert statuses[:5] == [401] * 5, statuses
    assert set(statuses[5:]) == {429}, statuses


async def test_streams_per_client_are_bounded(system: System) -> None:
    """Anonymous clients get a few dashboard streams each (the edge's cap), then 429; the API
    keeps answering. Light: ``tests/gateway/test_streams.py`` tests the caps in depth."""
    connector = aiohttp.TCPConnector(limit=0)
    opened: list[aiohttp.ClientResponse] = []
    refused: list[int] = []
    async with aiohttp.ClientSession(base_url=system.url, connector=connector) as http:
        try:
            for _ in range(12):
                response = await http.get("/dashboard/stream")
                if response.status == 200:
                    opened.append(response)
                    continue
                refused.append(response.status)
                await assert_problem(response, response.status)
                assert "Retry-After" in response.headers
                response.release()
                break
            assert refused, len(opened)
            assert refused[0] in (429, 503), (len(opened), refused)
            assert 1 <= len(opened) <= 10, len(opened)
            async with http.get("/api/v1/products?limit=1") as response:
                assert response.status == 200
        finally:
            for response in opened:
                response.close()


async def test_a_slow_client_is_cut_off(system: System) -> None:
    """A request head that never ends (slow loris) is dropped after the header timeout (2 s in
    this system). In depth: ``tests/gateway/test_timeouts.py``, ``tests/core/test_server.py``."""
    port = int(system.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(b"GET /api/v1/products HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()

        async def closed() -> bool:
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            return data == b"" or data.startswith(b"HTTP/1.1 408")

        await wait_for(closed, within=15, interval=0.2)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert time.monotonic() - started < 12
