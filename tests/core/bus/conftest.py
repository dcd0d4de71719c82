"""Fixtures of the bus tests: the real RabbitMQ on 127.0.0.1, throw-away names, cleanup."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import aiormq
import asyncpg
import pytest

from core.bus import schema as bus_schema
from core.bus.amqp import delay_queue_name, parking_queue_name
from core.db import create_pool
from core.migrate import create_database, drop_database
from core.testing.plugin import scratch_database_url

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
UNREACHABLE_AMQP_URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1
RABBITMQCTL = shutil.which("rabbitmqctl")


def holds(predicate: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    """An async condition for ``wait_for`` from a plain one."""

    async def check() -> object:
        return predicate()

    return check


def unique(label: str) -> str:
    """A name no other test (or test run) uses."""
    return f"test.{label}.{uuid.uuid4().hex[:12]}"


async def delete_topology(
    queues: Iterable[tuple[str, Iterable[float]]], exchanges: Iterable[str] = ()
) -> None:
    """Delete queues with their delay and parking queues, and exchanges, on the real broker."""
    async with aiormq.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        for queue, delays in queues:
            for name in (
                queue,
                parking_queue_name(queue),
                *(delay_queue_name(queue, d) for d in delays),
            ):
                await channel.queue_delete(name)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` in a subprocess (never blocking the loop); return its output."""
    if RABBITMQCTL is None:
        pytest.skip("rabbitmqctl is not available")
    process = await asyncio.create_subprocess_exec(
        RABBITMQCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (args, out, err)
    return out.decode()


async def close_named_connections(name: str) -> list[str]:
    """Make the broker close every connection named ``name`` (only ours: the broker is shared).

    Like ``rabbitmqctl close_all_connections``, restricted to this test's connections so that
    concurrent users of the same broker are not disturbed. Returns the closed connections' pids.
    """
    listing = await rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", "pid", "client_properties"
    )
    marker = f'{{"connection_name","{name}"}}'
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if marker in line]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "test")
    return pids


@pytest.fixture
async def amqp_cleanup() -> AsyncIterator[list[tuple[str, Iterable[float]]]]:
    """A list to append ``(queue, delays)`` to: those queues are deleted after the test.

    Request it before the transport fixture, so that the transport stops first (a running
    consumer would re-declare a deleted queue).
    """
    created: list[tuple[str, Iterable[float]]] = []
    yield created
    if created:
        await delete_topology(created)


class BrokerProxy:
    """A TCP relay to the real broker that a test can cut and restore.

    Cutting aborts every relayed socket and stops listening: to the client this is the broker
    going away (no ``Connection.Close``, connections refused) while the real broker, shared with
    others, keeps running.
    """

    def __init__(self, target_port: int = 5672) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    @property
    def url(self) -> str:
        """The AMQP URL through the relay."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Listen (on the same port as before, after a ``cut``)."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and abort every relayed connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    def freeze(self) -> None:
        """Hold every byte in both directions, sockets open: a broker that stopped answering."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Let the held bytes through again."""
        self._flowing.set()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            broker_reader, broker = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client.transport.abort()
            return
        self._writers |= {client, broker}
        await asyncio.gather(self._pipe(client_reader, broker), self._pipe(broker_reader, client))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@pytest.fixture
async def broker_proxy() -> AsyncIterator[BrokerProxy]:
    """A started relay to the real broker; cut in the test, closed after it."""
    proxy = BrokerProxy()
    await proxy.start()
    yield proxy
    if proxy._server is not None:
        await proxy.cut()


@pytest.fixture(scope="session")
def bus_dsn() -> Iterator[str]:
    """A throw-away database with the bus tables and a ``things`` table for handler effects."""
    dsn = scratch_database_url(f"test_bus_{uuid.uuid4().hex[:8]}")

    async def create() -> None:
        await create_database(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            for statement in (*bus_schema.UPGRADE, *bus_schema.UPGRADE_HEADERS):
                await conn.execute(statement)
            await conn.execute("CREATE TABLE things (name text PRIMARY KEY)")
        finally:
            await conn.close()

    asyncio.run(create())
    yield dsn
    asyncio.run(drop_database(dsn))


@pytest.fixture
async def pool(bus_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on ``bus_dsn`` with its tables emptied."""
    pool = await create_pool(bus_dsn, min_size=1, max_size=5)
    await pool.execute("TRUNCATE outbox, inbox, things")
    yield pool
    await pool.close()
