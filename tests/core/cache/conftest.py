"""Fixtures of the cache's tests: caches on the real Redis and memcached, and servers of our own
(on spare ports) that a test may stop and start again, or a relay to RabbitMQ that it may cut."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from core.cache import Cache
from core.testing import free_port, wait_for
from tests.core.bus.conftest import BrokerProxy
from tests.core.conftest import REDIS_URL

MEMCACHED_URL = "memcached://127.0.0.1:11211"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on ports 1 and 2
CLOSED_MEMCACHED_URL = "memcached://127.0.0.1:2"

CacheFactory = Callable[..., Cache]


@pytest.fixture
async def make_cache(namespace: str, redis: Redis) -> AsyncIterator[CacheFactory]:
    """A factory of caches in this test's namespace, on the real Redis and memcached unless told
    otherwise; all are closed afterwards, then the namespace's keys deleted (``redis``)."""
    made: list[Cache] = []

    def factory(**options: Any) -> Cache:
        options.setdefault("redis_url", REDIS_URL)
        options.setdefault("memcached_url", MEMCACHED_URL)
        cache = Cache(options.pop("namespace", namespace), **options)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        await cache.close()


@pytest.fixture
async def started(make_cache: CacheFactory) -> AsyncIterator[Callable[..., Any]]:
    """Like ``make_cache``, but awaits the cache's subscription to invalidations."""

    async def factory(**options: Any) -> Cache:
        cache = make_cache(**options)
        await cache.start()

        async def subscribed() -> bool:
            return cache.listening

        await wait_for(subscribed)
        return cache

    return factory


class ServerProcess:
    """A memcached or redis-server of a test's own, on a spare port, that can be stopped."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """How a cache reaches this server."""
        if self.kind == "memcached":
            return f"memcached://127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        if self.kind == "memcached":
            return ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(self.port), "-m", "16"]
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._process = await asyncio.create_subprocess_exec(
            *self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        async def accepting() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await wait_for(accepting)

    async def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it to be gone."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
            self._process = None


@pytest.fixture
async def memcached_process() -> AsyncIterator[ServerProcess]:
    """A running memcached of this test's own."""
    server = ServerProcess("memcached")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def redis_process() -> AsyncIterator[ServerProcess]:
    """A running redis-server of this test's own."""
    server = ServerProcess("redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def broker_proxy() -> AsyncIterator[BrokerProxy]:
    """A started relay to the real RabbitMQ (``tests.core.bus``'s), to cut in the test."""
    proxy = BrokerProxy()
    await proxy.start()
    yield proxy
    if proxy._server is not None:
        await proxy.cut()
