"""The faults, one after another: each breaks something for a while, then lets it heal.

A ``Fault`` is injected by ``run(rig)``, which returns once the fault is over (the broken part
is back, or the supervisor replaced the killed instance); the caller times it and then measures
how long the system takes to answer normally again. Nothing shared with other work on this
machine is touched: the broker, Redis and memcached are the run's own (``servers``) and
PostgreSQL is only reached through the run's fault proxy.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from ops.chaos.proxy import FaultProxy, ProxyThread
from ops.chaos.servers import Dependency
from ops.chaos.system import ChaosSystem
from perf.suite.system import wait_http

__all__ = ["FAULTS", "Fault", "Rig", "SystemDown"]

PG_LATENCY = 0.2


class SystemDown(Exception):
    """The system stopped (the supervisor exited): no later fault can run."""


@dataclass
class Rig:
    """What the faults act on."""

    system: ChaosSystem
    redis: Dependency
    memcached: Dependency
    rabbitmq: Dependency
    proxies: ProxyThread
    postgres: FaultProxy

    def label(self, fault: Fault) -> str:
        """The fault's label in the table: what was done, as it was done in this run."""
        dependency = getattr(self, fault.key, None)
        if fault.proxied_label and getattr(dependency, "proxied", False):
            return fault.proxied_label
        return fault.label


@dataclass(frozen=True)
class Fault:
    """A fault: ``key`` (``--only``/``--skip`` take it), the table's ``label`` (and
    ``proxied_label`` when a proxy in front of a shared server stood in for the server of the
    run's own), and ``inject``, which runs it for ``hold`` seconds and returns once it is over."""

    key: str
    label: str
    inject: Callable[[Rig, float], None]
    proxied_label: str = ""

    def run(self, rig: Rig, hold: float) -> None:
        """Inject the fault for ``hold`` seconds."""
        self.inject(rig, hold)


def _take_away(name: str) -> Callable[[Rig, float], None]:
    def fault(rig: Rig, hold: float) -> None:
        """Take the dependency away for ``hold`` seconds, then give it back and wait for it (a
        restarted Redis or memcached is empty: they keep nothing on disk)."""
        dependency: Dependency = getattr(rig, name)
        dependency.down()
        time.sleep(hold)
        dependency.up()

    return fault


def _refuse_postgres(rig: Rig, hold: float) -> None:
    rig.proxies.call(rig.postgres.refuse)
    time.sleep(hold)
    rig.proxies.call(rig.postgres.passthrough)


def _slow_postgres(rig: Rig, hold: float) -> None:
    rig.proxies.call(lambda: rig.postgres.delay(PG_LATENCY))
    time.sleep(hold)
    rig.proxies.call(rig.postgres.passthrough)


def _kill(role: str) -> Callable[[Rig, float], None]:
    def kill(rig: Rig, hold: float) -> None:
        """SIGKILL the first instance of ``role``; over once the supervisor has a new one on
        that port, ready (waits up to ``max(hold, 60)`` s)."""
        instances = rig.system.instances(role)
        if len(instances) < 2:
            raise SystemDown(f"{len(instances)} instance(s) of {role} running, not 2")
        victim = instances[0]
        command = victim.cmdline()
        port = command[command.index("--port") + 1]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + max(hold, 60.0)
        while time.monotonic() < deadline:
            if not rig.system.alive:
                raise SystemDown(
                    f"`aioshop up` exited with {rig.system.process.returncode} after its {role} "
                    f"instance was killed: it does not restart crashed instances"
                )
            replaced = [
                p for p in rig.system.instances(role) if p.pid != victim.pid and _port(p) == port
            ]
            if replaced:
                wait_http(f"http://127.0.0.1:{port}/readyz", timeout=deadline - time.monotonic())
                return
            time.sleep(0.1)
        raise SystemDown(f"no new {role} instance on port {port} within {max(hold, 60.0):.0f} s")

    return kill


def _port(process: psutil.Process) -> str:
    try:
        command = process.cmdline()
    except psutil.Error:
        return ""
    return command[command.index("--port") + 1] if "--port" in command else ""


FAULTS: tuple[Fault, ...] = (
    Fault(
        "rabbitmq",
        "RabbitMQ restarted (broker app stopped, started)",
        _take_away("rabbitmq"),
        "RabbitMQ unreachable (proxy)",
    ),
    Fault(
        "redis",
        "Redis stopped and started (empty)",
        _take_away("redis"),
        "Redis unreachable (proxy; not emptied)",
    ),
    Fault(
        "memcached", "memcached stopped", _take_away("memcached"), "memcached unreachable (proxy)"
    ),
    Fault("pg-refuse", "PostgreSQL refusing connections (proxy)", _refuse_postgres),
    Fault("pg-latency", f"PostgreSQL +{PG_LATENCY * 1000:.0f} ms each way (proxy)", _slow_postgres),
    # Last: with a supervisor that does not restart crashed instances, the system ends here.
    Fault("kill-orders", "an orders instance SIGKILLed (of 2)", _kill("orders")),
    Fault("kill-products", "a products instance SIGKILLed (of 2)", _kill("products")),
)
