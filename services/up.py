"""``aioshop up``: every service (with replicas), the gateway and the dashboard as processes.

Every process is an ``aioshop serve ROLE``. The plan is computed first (``plan``), so that it can
be printed and tested without starting anything; ``Supervisor`` (``services.supervisor``) then
starts the services, waits for their ``/readyz``, starts the front processes (the gateway, and
the dashboard when the ``web`` package is installed) pointed at every instance, and keeps them
running: a process that exits is started again with a backoff, and given up after too many
crashes in a short time (``RestartPolicy``). It stops everything in reverse order on
SIGINT/SIGTERM/SIGHUP. ``aioshop restart ROLE`` (``services.cli.restart``) asks it, over a Unix
socket in the data directory (``services.control``), to replace a role's instances one at a
time.

The children write to this process's terminal (or wherever its stderr goes): they inherit its
stdout and stderr, so no line passes through this process (a busy service's access log costs the
supervisor nothing). ``child_environment`` tells them which log format fits it, and that the
development-key warning was printed already.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from core.log_output import LOG_FILE_VAR
from core.logging import PROCESS_NAME_VAR, log_format
from core.settings import DEV_KEYS_WARNED_VAR
from services import registry
from services.control import running_supervisor
from services.process import Process, client_host
from services.supervisor import DRAIN_DELAY_VAR, CrashHistory, RestartPolicy, Supervisor

__all__ = [
    "DRAIN_DELAY_VAR",
    "CrashHistory",
    "Process",
    "RestartPolicy",
    "Supervisor",
    "child_environment",
    "parse_replicas",
    "plan",
    "rotation_delay",
    "running_supervisor",
]

MAX_REPLICAS = 16


def gateway_cidrs(host: str) -> list[str]:
    """The addresses a gateway on this machine calls the services from, as CIDRs."""
    cidrs = {"127.0.0.1/32", "::1/128"}
    with contextlib.suppress(ValueError):  # a name such as localhost: loopback covers it
        cidrs.add(str(ipaddress.ip_network(client_host(host))))
    return sorted(cidrs)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((client_host(host), 0))
        return int(sock.getsockname()[1])


def parse_replicas(specs: Sequence[str]) -> dict[str, int]:
    """``["products=2", "users=1,orders=3"]`` -> ``{"products": 2, ...}``; ``ValueError`` on
    an unknown service or a count outside 1..16."""
    replicas: dict[str, int] = {}
    for spec in specs:
        for item in spec.split(","):
            name, sep, count = item.strip().partition("=")
            if not sep or name not in registry.SERVICES:
                known = ", ".join(registry.SERVICES)
                raise ValueError(f"--replicas takes SERVICE=N, SERVICE one of {known}: {item!r}")
            if not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
                raise ValueError(f"a replica count is 1..{MAX_REPLICAS}: {item!r}")
            replicas[name] = int(count)
    return replicas


def child_environment(settings: Any, stream: TextIO) -> dict[str, str]:
    """The variables every child of ``aioshop up`` gets: ``LOG_FORMAT`` (text when ``stream``,
    where they write, is a terminal, JSON otherwise), unless ``settings`` chose one explicitly;
    and ``AIOSHOP_DEV_KEYS_WARNED``, since this process printed that warning already."""
    env = {DEV_KEYS_WARNED_VAR: "1"}
    if log_format(settings) is None:
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):
            terminal = False
        env["LOG_FORMAT"] = "text" if terminal else "json"
    return env


def _serve(role: str, host: str, port: int) -> list[str]:
    """The command of one process: ``aioshop serve ROLE``, with this interpreter."""
    return [
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        role,
        "--host",
        host,
        "--port",
        str(port),
    ]


def rotation_delay() -> float:
    """Seconds the gateway may take to take a failing instance out of rotation, with a round to
    spare: ``(UNHEALTHY_THRESHOLD + 1) * HEALTH_INTERVAL`` (6 s by default)."""
    from gateway.settings import Settings as GatewaySettings

    settings = GatewaySettings()
    return float((settings.unhealthy_threshold + 1) * settings.health_interval)


def _dashboard_available() -> bool:
    return importlib.util.find_spec("web") is not None and (
        importlib.util.find_spec("web.__main__") is not None
    )


def plan(
    host: str,
    replicas: Mapping[str, int],
    *,
    gateway: bool = True,
    dashboard: bool = True,
    environment: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
) -> list[Process]:
    """The processes ``aioshop up`` runs: each service's instances (the first on the service's
    configured port, more on free ports), then the dashboard and the gateway in front. Each gets
    ``environment`` (``child_environment``) and its name in ``AIOSHOP_PROCESS``; with
    ``log_dir``, its log file ``<log_dir>/<name>.log`` in ``LOG_FILE`` (and the dashboard the
    directory in ``DASHBOARD_LOG_DIR``, for its trace view)."""
    common = dict(environment or {})
    processes: list[Process] = []
    instances: dict[str, list[str]] = {}
    ports: dict[str, list[int]] = {}
    for name, entry in registry.SERVICES.items():
        base = entry.settings().port
        ports[name] = [base if i == 0 else _free_port(host) for i in range(replicas.get(name, 1))]
        instances[name] = [f"http://{client_host(host)}:{port}" for port in ports[name]]
    # Services that call another directly (orders reads prices from products) find it here.
    peers = {
        # Every instance: the caller spreads its calls and fails over (orders' CatalogClient).
        variable: ",".join(urls)
        for variable, urls in ((f"{n.upper()}_URL", u) for n, u in instances.items())
        # A URL set on purpose (or from a file) stays.
        if variable not in os.environ and f"{variable}_FILE" not in os.environ
    }
    # The gateway calls services and the dashboard from this machine: they believe its
    # X-Forwarded-For (per-client login throttling, anonymous idempotency keys, stream caps).
    proxies = json.dumps(gateway_cidrs(host))
    trusted = {} if "TRUSTED_PROXIES" in os.environ else {"TRUSTED_PROXIES": proxies}
    # A replica stopped by ``aioshop restart`` (SIGTERM) keeps serving with /readyz failing
    # until the gateway has taken it out of rotation; Ctrl-C (SIGINT) does not wait.
    drain = {}
    if gateway and DRAIN_DELAY_VAR not in os.environ:
        drain = {DRAIN_DELAY_VAR: f"{rotation_delay():g}"}
    for name, service_ports in ports.items():
        for i, port in enumerate(service_ports):
            label = f"{name}-{i}" if len(service_ports) > 1 else name
            env = {**common, **peers, **trusted, PROCESS_NAME_VAR: label}
            if len(service_ports) > 1:
                env.update(drain)
            processes.append(Process(label, name, _serve(name, host, port), port, env=env))
    upstreams = {f"UPSTREAM_{name.upper()}": ",".join(urls) for name, urls in instances.items()}
    if dashboard and _dashboard_available():
        # Imported by name: the dashboard is an optional part of an installation.
        port = int(importlib.import_module("web.settings").Settings().port)
        env = {**common, PROCESS_NAME_VAR: "dashboard"}
        if "DASHBOARD_TRUSTED_PROXIES" not in os.environ:
            env["DASHBOARD_TRUSTED_PROXIES"] = proxies
        web = Process("dashboard", "web", _serve("web", host, port), port, env=env, front=True)
        processes.append(web)
        upstreams["UPSTREAM_WEB"] = web.url(host)
    if gateway:
        from gateway.settings import Settings as GatewaySettings

        port = GatewaySettings().port
        env = {**common, **upstreams, PROCESS_NAME_VAR: "gateway"}
        cmd = _serve("gateway", host, port)
        processes.append(Process("gateway", "gateway", cmd, port, env=env, front=True))
    if log_dir is not None:
        for process in processes:
            process.env[LOG_FILE_VAR] = os.path.join(log_dir, f"{process.name}.log")
            if process.role == "web" and "DASHBOARD_LOG_DIR" not in os.environ:
                process.env["DASHBOARD_LOG_DIR"] = os.fspath(log_dir)
    return processes
