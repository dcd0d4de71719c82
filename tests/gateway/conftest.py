"""Fixtures of the gateway tests: real upstream processes, a gateway served in the test's loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

import migrations
from core.testing import free_port, wait_for
from gateway import Settings, create_gateway_app

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: connections are refused at once

Client = TestClient[Any, Any]


async def _answers(url: str) -> bool:
    try:
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


@dataclass
class ServiceProcess:
    """A service (``aioshop serve NAME``), running as its own process."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[str]:
        """What the service has logged so far (one JSON object a line)."""
        return self.log.read_text(encoding="utf-8").splitlines()


UsersProcess = ServiceProcess


@pytest.fixture(scope="session")
def gateway_users_dsn(throwaway_database: Callable[[str, Path], str]) -> str:
    """A users database of the gateway tests' own: the users process below runs an outbox
    relay for the whole session, which must not take the rows of the users service's tests."""
    return throwaway_database("gateway_users", migrations.location("users"))


@pytest.fixture(scope="session")
def gateway_products_dsn(throwaway_database: Callable[[str, Path], str]) -> str:
    """A products database of the gateway tests' own (for the same reason)."""
    return throwaway_database("gateway_products", migrations.location("products"))


@pytest.fixture
async def gateway_users_db(gateway_users_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the database of the users process behind the gateway."""
    conn = await asyncpg.connect(gateway_users_dsn)
    yield conn
    await conn.close()


def _serve(
    name: str, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp(name) / f"{name}.log"
    env = {
        **os.environ,
        "AIOSHOP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "BUS_TRANSPORT": "memory",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        **env,
    }
    cmd = [sys.executable, "-m", "services.cli", "serve", name, "--port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=sink)  # noqa: S603
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert process.poll() is None, log.read_text(encoding="utf-8")
        return await _answers(f"{url}/readyz")

    try:
        asyncio.run(wait_for(ready, within=30, interval=0.1))
        yield ServiceProcess(url, log, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def users_upstream(
    gateway_users_dsn: str, redis_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """``aioshop serve users`` on a free port, on a throw-away database of its own."""
    env = {"USERS_DATABASE_URL": gateway_users_dsn, "REDIS_NAMESPACE": redis_namespace}
    yield from _serve("users", env, tmp_path_factory)


@pytest.fixture(scope="session")
def products_upstream(
    gateway_products_dsn: str, redis_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """``aioshop serve products`` on a free port, on a throw-away database of its own."""
    env = {
        "PRODUCTS_DATABASE_URL": gateway_products_dsn,
        "REDIS_NAMESPACE": f"{redis_namespace}.gw-products",
    }
    yield from _serve("products", env, tmp_path_factory)


@dataclass
class FakeUpstream:
    """A fake upstream process (``tests.gateway.fake_upstream``)."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    restarts: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def seen(self) -> list[dict[str, Any]]:
        """The requests it received."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/_seen") as resp:
            seen: list[dict[str, Any]] = await resp.json()
            return seen

    async def set_ready(self, ready: bool) -> None:
        """Make its ``/readyz`` pass or fail."""
        async with aiohttp.ClientSession() as session:
            await session.post(f"{self.url}/_ready/{'on' if ready else 'off'}")

    async def kill(self) -> None:
        """SIGKILL it and reap it."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


FakeFactory = Callable[..., Awaitable[FakeUpstream]]


async def _spawn_fake(name: str, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.gateway.fake_upstream",
        "--port",
        str(port),
        "--name",
        name,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def ready() -> bool:
        assert process.returncode is None, f"fake upstream {name} exited"
        return await _answers(f"http://127.0.0.1:{port}/readyz")

    await wait_for(ready, within=20, interval=0.05)
    return process


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeFactory]:
    """A factory of fake upstream processes; ``restart=fake`` starts it again on its port.
    Every process it started is stopped afterwards."""
    started: list[asyncio.subprocess.Process] = []

    async def factory(name: str = "a", *, restart: FakeUpstream | None = None) -> FakeUpstream:
        if restart is not None:
            restart.process = await _spawn_fake(restart.name, restart.port)
            started.append(restart.process)
            return restart
        port = free_port()
        process = await _spawn_fake(name, port)
        started.append(process)
        return FakeUpstream(name, port, process)

    yield factory
    for process in started:
        if process.returncode is None:
            process.terminate()
    for process in started:
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def gateway_settings(redis_namespace: str) -> SettingsFactory:
    """Test settings of a gateway: every upstream closed unless given, fast health checks, rate
    limits counted under a namespace of this test alone."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "redis_namespace": redis_namespace,
            "rate_limit_namespace": f"{redis_namespace}.gw-{uuid.uuid4().hex[:8]}",
            "upstream_users": CLOSED,
            "upstream_products": CLOSED,
            "upstream_orders": CLOSED,
            "upstream_web": CLOSED,
            "bus_transport": "memory",
            "health_interval": 0.1,
            "health_timeout": 0.5,
            "upstream_timeout": 5.0,
            "log_level": "WARNING",
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


GatewayFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[Client]], gateway_settings: SettingsFactory
) -> GatewayFactory:
    """``await make_gateway(upstream_products=fake.url, ...)``: a client of a running gateway."""

    async def factory(**overrides: Any) -> Client:
        return await aiohttp_client(create_gateway_app(gateway_settings(**overrides)))

    return factory


async def metric(client: Client, name: str, **labels: str) -> float:
    """The sum of the samples of metric ``name`` with ``labels`` in the gateway's ``/metrics``."""
    text = await (await client.get("/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in sample for key, val in labels.items()):
            total += float(value)
    return total
