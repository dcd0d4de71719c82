"""The system under test: ``aioshop up`` with its shipped defaults, isolated from anything else.

``launch_system`` runs ``aioshop up --demo N`` as a child process with databases, a Redis
namespace, a bus exchange and queues, and ports of its own (nothing a developer's running system
or another benchmark uses), waits for the gateway to be ready, and on exit stops it and deletes
all it created. What differs from a plain ``aioshop up`` is listed in ``System.changes`` and
printed under the table: the gateway's per-client rate limits (one load generator is one
client) and an admin account for the rows that need one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

import psutil

__all__ = [
    "ROLES",
    "System",
    "extra_products",
    "free_port",
    "launch_system",
    "stop_process",
    "wait_http",
]

HOST = "127.0.0.1"
ROLES = ("users", "products", "orders", "web", "gateway")
READY_TIMEOUT = 180.0
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
UNLIMITED = "100000000/60"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _database(name: str) -> str:
    return urlunsplit(urlsplit(POSTGRES)._replace(path=f"/{name}"))


def wait_http(url: str, *, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 (fail if ``alive`` exits or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{alive.args!r} exited with {alive.returncode} before {url} was up")
        try:
            with urlopen(url, timeout=2) as response:  # noqa: S310  # nosec B310
                if response.status == 200:
                    return
        except (URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class System:
    """A running ``aioshop up`` of the benchmark: its addresses, databases and processes."""

    suffix: str
    ports: dict[str, int]
    databases: dict[str, str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    admin: tuple[str, str]
    log: Path
    changes: list[str] = field(default_factory=list)

    def url(self, role: str) -> str:
        """The base URL of ``role`` (``gateway``, ``products``...)."""
        return f"http://{HOST}:{self.ports[role]}"

    def pids(self) -> dict[str, int]:
        """The process id of each role's instance (the children ``aioshop up`` started)."""
        found: dict[str, int] = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            for role in ROLES:
                if "serve" in command and role in command:
                    found.setdefault(role, child.pid)
        return found

    def rss_mb(self) -> dict[str, float]:
        """The resident memory of each role's instance, in MB."""
        sizes: dict[str, float] = {}
        for role, pid in self.pids().items():
            try:
                sizes[role] = psutil.Process(pid).memory_info().rss / 1024 / 1024
            except psutil.Error:
                continue
        return sizes


def _environment(suffix: str, ports: dict[str, int], admin: tuple[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_PORT", "_DATABASE_URL"))}
    env.update(
        {
            "USERS_DATABASE_URL": _database(f"bench_users_{suffix}"),
            "PRODUCTS_DATABASE_URL": _database(f"bench_products_{suffix}"),
            "ORDERS_DATABASE_URL": _database(f"bench_orders_{suffix}"),
            "ARCHIVE_ENABLED": "false",  # not measured; it would write to the default database
            "REDIS_URL": REDIS_URL,
            "AMQP_URL": AMQP_URL,
            "REDIS_NAMESPACE": f"bench-{suffix}",
            "BUS_EXCHANGE": f"bench-{suffix}.events",
            "PRODUCTS_BUS_QUEUE": f"bench-{suffix}-products",
            "ORDERS_BUS_QUEUE": f"bench-{suffix}-orders",
            "RATE_LIMIT_DEFAULT": UNLIMITED,
            "RATE_LIMIT_AUTH": UNLIMITED,
            "ADMIN_EMAIL": admin[0],
            "ADMIN_PASSWORD": admin[1],
            **{f"{role.upper()}_PORT": str(port) for role, port in ports.items()},
        }
    )
    return env


async def _cleanup(system: System) -> None:
    import aiormq
    from redis.asyncio import Redis

    from core.bus import RetryPolicy
    from core.bus.amqp import delay_queue_name, parking_queue_name
    from core.migrate import drop_database

    for dsn in system.databases.values():
        await drop_database(dsn)
    redis = Redis.from_url(REDIS_URL)
    try:
        async for key in redis.scan_iter(match=f"bench-{system.suffix}*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(system.env["BUS_EXCHANGE"])
        for queue in (system.env["PRODUCTS_BUS_QUEUE"], system.env["ORDERS_BUS_QUEUE"]):
            names = [queue, parking_queue_name(queue)]
            names += [delay_queue_name(queue, delay) for delay in RetryPolicy().delays]
            for name in names:
                await channel.queue_delete(name)
    finally:
        await connection.close()


def stop_process(process: subprocess.Popen[bytes], *, timeout: float = 30) -> None:
    """SIGINT ``process`` (a Ctrl-C: ``aioshop up`` stops its children) and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait()


def _last_words(log: Path, lines: int = 25) -> str:
    """The end of the system's output, without the access log (what says why it stopped)."""
    kept = [
        line for line in log.read_text(errors="replace").splitlines() if '"core.access"' not in line
    ]
    return "\n".join(kept[-lines:])


@contextmanager
def extra_products(system: System, name: str, env: dict[str, str]) -> Iterator[tuple[str, float]]:
    """One more products instance beside ``system`` (same database and bus), with ``env`` on top
    of the system's: yields its URL and how long it took to be ready; stopped on exit."""
    port = free_port()
    variables = {**system.env, **env, "PRODUCTS_PORT": str(port), "AIOSHOP_PROCESS": name}
    started = time.monotonic()
    with system.log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "products", "--port", str(port)],
            env=variables,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}"
    try:
        wait_http(f"{url}/readyz", timeout=60, alive=process)
        yield url, time.monotonic() - started
    finally:
        stop_process(process, timeout=15)


def _start_system(products: int, reports: Path) -> System:
    suffix = uuid.uuid4().hex[:8]
    ports = {role: free_port() for role in ROLES}
    admin = (f"bench-admin-{suffix}@example.com", secrets.token_urlsafe(16))
    env = _environment(suffix, ports, admin)
    reports.mkdir(parents=True, exist_ok=True)
    log = reports / "bench-system.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--demo", str(products)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return System(
        suffix=suffix,
        ports=ports,
        databases={
            name: env[f"{name.upper()}_DATABASE_URL"] for name in ("users", "products", "orders")
        },
        env=env,
        process=process,
        admin=admin,
        log=log,
        changes=[
            f"gateway rate limits raised to {UNLIMITED} (RATE_LIMIT_DEFAULT, RATE_LIMIT_AUTH): "
            "the load comes from one address",
            "ADMIN_EMAIL/ADMIN_PASSWORD set (an admin for the rows that need one)",
            "its own databases, Redis namespace, bus exchange and queues (deleted at the end)",
        ],
    )


def _tear_down(system: System) -> None:
    stop_process(system.process)
    asyncio.run(_cleanup(system))


@contextmanager
def launch_system(*, products: int, reports: Path, attempts: int = 2) -> Iterator[System]:
    """``aioshop up --demo products`` isolated for the benchmark, ready; torn down on exit.

    A system that stops before it is ready is started again on new ports (``attempts`` in
    all): its free ports were only free when they were picked, and on a busy machine another
    process may take one first. The error says what the system said last."""
    for attempt in range(1, attempts + 1):
        system = _start_system(products, reports)
        try:
            wait_http(
                f"{system.url('gateway')}/readyz", timeout=READY_TIMEOUT, alive=system.process
            )
        except RuntimeError as exc:
            words = _last_words(system.log)
            _tear_down(system)
            if attempt == attempts:
                raise RuntimeError(f"{exc}; the system's last words:\n{words}") from exc
            print(f"the system stopped before it was ready; again:\n{words}", file=sys.stderr)
            continue
        try:
            yield system
        finally:
            _tear_down(system)
        return
