"""The system under fault: ``aioshop up --replicas orders=2,products=2`` on the run's own
servers, its databases reached through the PostgreSQL fault proxy.

Like ``perf.suite.system.launch_system`` (whose helpers it uses), it isolates the run: its own
databases, Redis namespace, bus exchange and queues, ports and data directory; the gateway's
rate limits raised (one load generator is one client) and an admin for the load's restocks.
What differs: the Redis, memcached and RabbitMQ URLs are the run's own servers
(``ops.chaos.servers``), the database URLs point at the fault proxy, two instances of orders and
of products run (a SIGKILL hits one of two), and every pool is small (the PostgreSQL server is
shared with other work).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiormq
import psutil
from redis.asyncio import Redis

from core.bus import RetryPolicy
from core.bus.amqp.common import delay_queue_name, parking_queue_name
from core.migrate import drop_database
from perf.suite.system import ROLES, UNLIMITED, free_port, stop_process, wait_http

__all__ = ["ChaosSystem", "forget_shared", "launch"]

HOST = "127.0.0.1"
REPLICAS = {"orders": 2, "products": 2}
POOL_SIZE = 5  # per instance: 5 instances share PostgreSQL's 100 connections with others
READY_TIMEOUT = 180.0
UP_LINE = b"aioshop is up:"  # what the supervisor prints once every process is ready


@dataclass
class ChaosSystem:
    """A running ``aioshop up`` of the chaos run."""

    suffix: str
    ports: dict[str, int]
    env: dict[str, str]
    databases: dict[str, str]  # name -> DSN through the proxy
    direct: dict[str, str]  # name -> DSN straight to PostgreSQL (for the invariants)
    admin: tuple[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def gateway(self) -> str:
        """The gateway's base URL."""
        return f"http://{HOST}:{self.ports['gateway']}"

    @property
    def queues(self) -> list[str]:
        """The consumed bus queues (their parking queues hold what failed for good)."""
        return [self.env["PRODUCTS_BUS_QUEUE"], self.env["ORDERS_BUS_QUEUE"]]

    def instances(self, role: str) -> list[psutil.Process]:
        """The live ``aioshop serve ROLE`` processes of the supervisor, by port."""
        found: list[tuple[str, psutil.Process]] = []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return []
        for child in children:
            try:
                command = child.cmdline()
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if "serve" in command and role in command and "--port" in command:
                found.append((command[command.index("--port") + 1], child))
        return [process for _, process in sorted(found, key=lambda pair: pair[0])]

    @property
    def alive(self) -> bool:
        """Whether the supervisor runs."""
        return self.process.poll() is None


async def forget_shared(system: ChaosSystem, shared: Sequence[str]) -> None:
    """Delete what the system left on the ``shared`` servers (``redis``, ``rabbitmq``: those
    reached through proxies, which relay again by now): its Redis keys, exchange and queues."""
    if "redis" in shared:
        redis = Redis.from_url(system.env["REDIS_URL"])
        try:
            async for key in redis.scan_iter(match=f"chaos-{system.suffix}*", count=1000):
                await redis.delete(key)
        finally:
            await redis.aclose()
    if "rabbitmq" not in shared:
        return
    connection = await aiormq.connect(system.env["AMQP_URL"])
    try:
        channel = await connection.channel()
        await channel.exchange_delete(system.env["BUS_EXCHANGE"])
        for queue in system.queues:
            names = [queue, parking_queue_name(queue)]
            names += [delay_queue_name(queue, delay) for delay in RetryPolicy().delays]
            for name in names:
                await channel.queue_delete(name)
    finally:
        await connection.close()


def _dsn(server: str, name: str, port: int | None = None) -> str:
    parts = urlsplit(server)
    netloc = parts.netloc if port is None else f"{parts.netloc.rsplit(':', 1)[0]}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{name}"))


def _environment(
    base: dict[str, str],
    suffix: str,
    ports: dict[str, int],
    databases: dict[str, str],
    servers: dict[str, str],
    admin: tuple[str, str],
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.endswith(("_PORT", "_DATABASE_URL", "_URL"))}
    env.update(
        {
            **{f"{name.upper()}_DATABASE_URL": dsn for name, dsn in databases.items()},
            "ARCHIVE_ENABLED": "false",  # not under test; it would write to the default database
            "REDIS_URL": servers["redis"],
            "MEMCACHED_URL": servers["memcached"],
            "AMQP_URL": servers["rabbitmq"],
            "REDIS_NAMESPACE": f"chaos-{suffix}",
            "BUS_EXCHANGE": f"chaos-{suffix}.events",
            "PRODUCTS_BUS_QUEUE": f"chaos-{suffix}-products",
            "ORDERS_BUS_QUEUE": f"chaos-{suffix}-orders",
            "RATE_LIMIT_DEFAULT": UNLIMITED,
            "RATE_LIMIT_AUTH": UNLIMITED,
            "ADMIN_EMAIL": admin[0],
            "ADMIN_PASSWORD": admin[1],
            "DB_POOL_MAX_SIZE": str(POOL_SIZE),
            "LOG_FORMAT": "json",
            **{f"{role.upper()}_PORT": str(port) for role, port in ports.items()},
        }
    )
    return env


@contextmanager
def launch(
    *,
    postgres: str,
    proxy_port: int,
    servers: dict[str, str],
    workdir: Path,
    products: int,
    base_env: dict[str, str],
    shared: Sequence[str] = (),
) -> Iterator[ChaosSystem]:
    """Start the system (``servers``: the ``redis``, ``memcached`` and ``rabbitmq`` URLs;
    databases on the server of ``postgres`` through ``proxy_port``) and yield it once the
    gateway is ready; stop it and drop its databases on exit (and delete what it left on the
    ``shared`` servers: ``forget_shared``)."""
    suffix = uuid.uuid4().hex[:8]
    ports = {role: free_port() for role in ROLES}
    admin = (f"chaos-admin-{suffix}@example.com", secrets.token_urlsafe(16))
    names = {name: f"chaos_{name}_{suffix}" for name in ("users", "products", "orders")}
    databases = {name: _dsn(postgres, db, proxy_port) for name, db in names.items()}
    direct = {name: _dsn(postgres, db) for name, db in names.items()}
    env = _environment(base_env, suffix, ports, databases, servers, admin)
    log = workdir / "system.log"
    replicas = ",".join(f"{name}={count}" for name, count in REPLICAS.items())
    command = [sys.executable, "-m", "services.cli", "up", "--demo", str(products)]
    command += ["--replicas", replicas, "--data-dir", str(workdir / "aioshop")]
    with log.open("wb") as output:
        process = subprocess.Popen(  # nosec B603: our own command line
            command, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    system = ChaosSystem(suffix, ports, env, databases, direct, admin, process, log)
    try:
        _wait_up(system)
        wait_http(f"{system.gateway}/readyz", timeout=READY_TIMEOUT, alive=process)
        yield system
    finally:
        stop_process(process)
        asyncio.run(_drop(direct.values()))
        asyncio.run(forget_shared(system, shared))


def _wait_up(system: ChaosSystem) -> None:
    """Wait for the supervisor to say everything is ready (a 200 on the gateway's port alone
    could come from another process that took the port after it was picked)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while UP_LINE not in system.log.read_bytes():
        if not system.alive:
            raise RuntimeError(
                f"`aioshop up` exited with {system.process.returncode}; see {system.log}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"`aioshop up` not ready in {READY_TIMEOUT:.0f} s; see {system.log}")
        time.sleep(0.2)


async def _drop(dsns: Iterable[str]) -> None:
    for dsn in dsns:
        await drop_database(dsn)
