"""``aioshop up``: every service (with replicas), the gateway and the dashboard as processes.

Every process is an ``aioshop serve ROLE``. The plan is computed first (``plan``), so that it can
be printed and tested without starting anything; ``Supervisor`` then starts the services, waits
for their ``/readyz``, starts the front processes (the gateway, and the dashboard when the ``web``
package is installed) pointed at every instance, and stops everything in reverse order on
SIGINT/SIGTERM or when one exits.

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
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from core.logging import PROCESS_NAME_VAR, log_format
from core.settings import DEV_KEYS_WARNED_VAR
from services import registry

__all__ = ["Process", "Supervisor", "child_environment", "parse_replicas", "plan"]

MAX_REPLICAS = 16


@dataclass(frozen=True, slots=True)
class Process:
    """One process to run: ``name`` is unique (``products-1``), ``role`` what it runs."""

    name: str
    role: str
    cmd: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    front: bool = False  # started after every service is ready

    def url(self, host: str) -> str:
        """The base URL this process answers on."""
        return f"http://{_client_host(host)}:{self.port}"


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104  # nosec B104: a comparison, no bind


def gateway_cidrs(host: str) -> list[str]:
    """The addresses a gateway on this machine calls the services from, as CIDRs."""
    cidrs = {"127.0.0.1/32", "::1/128"}
    with contextlib.suppress(ValueError):  # a name such as localhost: loopback covers it
        cidrs.add(str(ipaddress.ip_network(_client_host(host))))
    return sorted(cidrs)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((_client_host(host), 0))
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
) -> list[Process]:
    """The processes ``aioshop up`` runs: each service's instances (the first on the service's
    configured port, more on free ports), then the dashboard and the gateway in front. Each gets
    ``environment`` (``child_environment``) and its name in ``AIOSHOP_PROCESS``."""
    common = dict(environment or {})
    processes: list[Process] = []
    instances: dict[str, list[str]] = {}
    ports: dict[str, list[int]] = {}
    for name, entry in registry.SERVICES.items():
        base = entry.settings().port
        ports[name] = [base if i == 0 else _free_port(host) for i in range(replicas.get(name, 1))]
        instances[name] = [f"http://{_client_host(host)}:{port}" for port in ports[name]]
    # Services that call another directly (orders reads prices from products) find it here.
    peers = {
        variable: urls[0]
        for variable, urls in ((f"{n.upper()}_URL", u) for n, u in instances.items())
        # A URL set on purpose (or from a file) stays.
        if variable not in os.environ and f"{variable}_FILE" not in os.environ
    }
    # The gateway calls services and the dashboard from this machine: they believe its
    # X-Forwarded-For (per-client login throttling, anonymous idempotency keys, stream caps).
    proxies = json.dumps(gateway_cidrs(host))
    trusted = {} if "TRUSTED_PROXIES" in os.environ else {"TRUSTED_PROXIES": proxies}
    for name, service_ports in ports.items():
        for i, port in enumerate(service_ports):
            label = f"{name}-{i}" if len(service_ports) > 1 else name
            env = {**common, **peers, **trusted, PROCESS_NAME_VAR: label}
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
    return processes


class Supervisor:
    """Starts a plan's processes, waits for them to be ready, stops them all together."""

    def __init__(self, processes: Sequence[Process], host: str, *, ready_timeout: float = 60):
        self.processes = list(processes)
        self.host = host
        self.ready_timeout = ready_timeout
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def run(self) -> int:
        """Start everything, print the URLs, wait for Ctrl-C (0) or a process exiting (1)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # HUP: terminal closed
            signal.signal(signum, self._stop)
        try:
            for front in (False, True):
                group = [p for p in self.processes if p.front is front]
                for process in group:
                    self._start(process)
                if not self._wait_ready(group):
                    return 1
            self._print_urls()
            while not self._stopping:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        print(f"{name} exited with {child.returncode}; stopping", file=sys.stderr)
                        return 1
                time.sleep(0.2)
            return 0
        finally:
            self.terminate()

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _start(self, process: Process) -> None:
        env = {**os.environ, **process.env}
        # start_new_session: Ctrl-C reaches only this parent, which stops the children in order.
        self.children[process.name] = subprocess.Popen(  # noqa: S603
            process.cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )

    def _wait_ready(self, group: Sequence[Process]) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        pending = {p.name: p for p in group}
        while pending and not self._stopping:
            for name, process in list(pending.items()):
                if self.children[name].poll() is not None:
                    print(f"{name} exited before it was ready; stopping", file=sys.stderr)
                    return False
                if _ready(f"{process.url(self.host)}/readyz"):
                    del pending[name]
            if time.monotonic() > deadline:
                print(f"not ready in time: {', '.join(pending)}; stopping", file=sys.stderr)
                return False
            time.sleep(0.2)
        return not pending

    def _print_urls(self) -> None:
        by_name = {p.name: p for p in self.processes}
        print("\naioshop is up:")
        if "gateway" in by_name:
            base = by_name["gateway"].url(self.host)
            print(f"  gateway    {base}   docs {base}/docs   (use this one)")
            if "dashboard" in by_name:
                print(f"  dashboard  {base}/dashboard")
        for process in self.processes:
            if process.name == "gateway":
                continue
            base = process.url(self.host)
            page = f"{base}/dashboard" if process.role == "web" else f"docs {base}/docs"
            print(f"  {process.name:<10} {base}   {page}")
        print("Ctrl-C stops everything.\n", flush=True)

    def terminate(self) -> None:
        """SIGTERM the front processes, then the services; SIGKILL what outlives 15 s."""
        order = sorted(self.children.items(), key=lambda kv: not self._is_front(kv[0]))
        for _, child in order:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, child in order:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", file=sys.stderr)
                child.kill()
                child.wait()

    def _is_front(self, name: str) -> bool:
        return any(p.front for p in self.processes if p.name == name)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when this supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so no service outlives ``aioshop up`` and holds its port."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310  # nosec B310: our own http:// URL
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False
