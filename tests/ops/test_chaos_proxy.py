"""The fault proxy of ``ops.chaos`` on real sockets: it relays, delays and refuses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ops.chaos.proxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _cut(reader: asyncio.StreamReader) -> bool:
    """Whether the connection was closed or reset (reading ends or fails at once)."""
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """A proxy in front of an echo server of the test."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    relay = FaultProxy("127.0.0.1", port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        server.close()
        await server.wait_closed()


async def _round_trip(port: int, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.monotonic()
        writer.write(payload)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        return answer, time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.unit
async def test_it_relays(proxy: FaultProxy) -> None:
    answer, elapsed = await _round_trip(proxy.port)
    assert answer == b"ping"
    assert elapsed < 0.15


@pytest.mark.unit
async def test_it_adds_the_latency_each_way(proxy: FaultProxy) -> None:
    await proxy.delay(0.2)
    answer, elapsed = await _round_trip(proxy.port)
    assert answer == b"ping"
    assert 0.4 <= elapsed < 1.5  # 200 ms there, 200 ms back
    await proxy.passthrough()
    _, elapsed = await _round_trip(proxy.port)
    assert elapsed < 0.15


@pytest.mark.unit
async def test_a_delayed_stream_keeps_its_order_and_its_throughput(proxy: FaultProxy) -> None:
    await proxy.delay(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        started = time.monotonic()
        parts = [f"{i:04d}".encode() for i in range(20)]
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        answer = await asyncio.wait_for(reader.readexactly(80), 10)
        # Latency, not a throttle: 20 chunks are not 20 x 400 ms.
        assert answer == b"".join(parts)
        assert time.monotonic() - started < 2.0
    finally:
        writer.close()


@pytest.mark.unit
async def test_refusing_cuts_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
    await proxy.refuse()
    assert await _cut(reader)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await _round_trip(proxy.port)
    await proxy.passthrough()
    answer, _ = await _round_trip(proxy.port)
    assert answer == b"ping"


async def test_postgresql_through_the_proxy() -> None:
    """A real PostgreSQL session: it works through the proxy, a query pays the latency, and
    refusing makes connecting fail."""
    relay = FaultProxy("127.0.0.1", 5432)
    await relay.start()
    dsn = f"postgresql://postgres@127.0.0.1:{relay.port}/postgres"
    try:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await relay.delay(0.2)
            started = time.monotonic()
            assert await conn.fetchval("SELECT 2") == 2
            assert time.monotonic() - started >= 0.4
        finally:
            await relay.passthrough()
            await conn.close()
        await relay.refuse()
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(dsn, timeout=5)
    finally:
        await relay.stop()
