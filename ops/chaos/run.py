"""One chaos run: servers, the system, the load, each fault in turn, the table.

For each fault: inject it (``faults``), time it, then measure the recovery (``probe``: from
the fault's end to the first order confirmed end to end) and check the invariants in the
databases (``ops.invariants``) while the load goes on. A baseline row comes first (the load
without a fault) and a last row checks the invariants once the load has stopped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops.chaos import faults as faults_module
from ops.chaos.faults import Fault, Rig, SystemDown
from ops.chaos.load import Load
from ops.chaos.probe import Probe
from ops.chaos.proxy import ProxyThread
from ops.chaos.servers import Dependency, Memcached, Proxied, RabbitMQ, Redis, Server, workdir
from ops.chaos.system import ChaosSystem, launch
from ops.chaos.table import Row, markdown, write
from ops.invariants import Violation, check_invariants, order_counts
from perf.suite.system import AMQP_URL, POSTGRES, REDIS_URL

MEMCACHED_URL = os.environ.get("CHAOS_MEMCACHED_URL", "memcached://127.0.0.1:11211")

__all__ = ["PROFILES", "Profile", "run"]


@dataclass(frozen=True)
class Profile:
    """How long and how hard: the load, each fault's length, the waits' bounds."""

    users: int
    think: float  # AIOSHOP_LOAD_THINK: think times scaled
    baseline: float  # seconds of load before the first fault
    hold: float  # seconds each fault lasts (but the kills: until the instance is back)
    holds: dict[str, float] = field(default_factory=dict)  # per fault key, instead of hold
    products: int = 200
    recovery_timeout: float = 90.0
    deadline: float = 60.0  # for the invariants (the saga's own timeouts are 30 s)

    def hold_of(self, fault: Fault) -> float:
        """How long ``fault`` lasts."""
        return self.holds.get(fault.key, self.hold)


PROFILES = {
    "full": Profile(users=30, think=0.5, baseline=20, hold=15, holds={"pg-refuse": 10}),
    "short": Profile(users=10, think=0.3, baseline=5, hold=3, holds={"pg-refuse": 5}),
}


def _log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _recover(probe: Probe, system: ChaosSystem, timeout: float) -> float | None:
    """Seconds until the probe's order is confirmed (``None``: not within ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not system.alive:
            return None
        if asyncio.run(probe.healthy()):
            return time.monotonic() - started
        time.sleep(0.5)  # between two probes: each is a whole order
    return None


def _check(system: ChaosSystem, rabbitmq: Dependency, deadline: float) -> list[Violation]:
    return asyncio.run(
        check_invariants(
            system.direct["orders"],
            system.direct["products"],
            deadline=deadline,
            amqp_url=rabbitmq.url,
            parking_queues=system.queues,
        )
    )


def _fault_row(
    fault: Fault, rig: Rig, load: Load, probe: Probe, profile: Profile
) -> tuple[Row, bool]:
    """Run ``fault`` and measure it; whether the system is still up."""
    hold = profile.hold_of(fault)
    label = rig.label(fault)
    _log(f"fault: {label} ({hold:g} s)")
    start, started = time.time(), time.monotonic()
    note = ""
    up = True
    try:
        fault.run(rig, hold)
    except SystemDown as exc:
        note, up = str(exc), False
    duration = time.monotonic() - started
    recovery = _recover(probe, rig.system, profile.recovery_timeout) if up else None
    if recovery is None and up:
        note = f"no order confirmed within {profile.recovery_timeout:g} s; last: {probe.last}"
    window = load.window(start, time.time())
    recovered = "not recovered" if recovery is None else f"recovered in {recovery:.1f} s"
    _log(f"  over after {duration:.1f} s, {recovered}; checking the invariants")
    violations = _check(rig.system, rig.rabbitmq, profile.deadline) if up else []
    _log(f"  {len(violations)} invariant violation(s)")
    return Row(label, duration, window, recovery, violations, note, key=fault.key), up


def _wait_for_traffic(load: Load, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while load.window(0, time.time() + 1).requests == 0:
        if not load.running or time.monotonic() > deadline:
            raise RuntimeError(f"the load sent no request; see {load.output}")
        time.sleep(0.2)


def _run_system(
    rig_parts: dict[str, Any], system: ChaosSystem, profile: Profile, faults: Sequence[Fault]
) -> list[Row]:
    rig = Rig(system=system, **rig_parts)
    probe = Probe(system.gateway, system.admin)
    asyncio.run(probe.setup())
    env = {**system.env, "AIOSHOP_ADMIN_EMAIL": system.admin[0]}
    env["AIOSHOP_ADMIN_PASSWORD"] = system.admin[1]
    load = Load(
        system.gateway, users=profile.users, workdir=system.log.parent, env=env, think=profile.think
    )
    rows: list[Row] = []
    load.start()
    try:
        _wait_for_traffic(load)
        _log(f"load running ({profile.users} users); baseline {profile.baseline:g} s")
        start, started = time.time(), time.monotonic()
        time.sleep(profile.baseline)  # the baseline window: the load without a fault
        recovery = _recover(probe, system, profile.recovery_timeout)
        violations = _check(system, rig.rabbitmq, profile.deadline)
        window = load.window(start, time.time())
        rows.append(
            Row("baseline (no fault)", time.monotonic() - started, window, recovery, violations)
        )
        for fault in faults:
            row, up = _fault_row(fault, rig, load, probe, profile)
            rows.append(row)
            if not up:
                break
    finally:
        load.stop()
    _log("load stopped; final check of the invariants")
    violations = _check(system, rig.rabbitmq, profile.deadline)
    counts = asyncio.run(order_counts(system.direct["orders"]))
    note = f"checked {sum(counts.values())} orders: " + ", ".join(
        f"{n} {status}" for status, n in counts.items()
    )
    if not counts:
        violations.append(Violation("orders-placed", "the load placed no order: nothing checked"))
    whole = load.window(0, time.time())
    rows.append(
        Row("whole run (checked once the load stopped)", whole.span, whole, 0.0, violations, note)
    )
    return rows


def _start_servers(
    folder: Path, proxies: ProxyThread, *, proxied: Sequence[str]
) -> tuple[Dependency, Dependency, Dependency]:
    """Redis, memcached and RabbitMQ of the run's own (each in its place a proxy in front of
    the shared server when its program is missing, or when ``proxied`` names it)."""
    shared = {Redis: REDIS_URL, Memcached: MEMCACHED_URL, RabbitMQ: AMQP_URL}
    own: list[Server] = []
    chosen: list[Dependency] = []
    for kind, url in shared.items():
        if kind.installed() and kind.name not in proxied:
            server = kind(folder)
            own.append(server)
            chosen.append(server)
        else:
            _log(f"{kind.name}: a proxy in front of the shared server at {url}")
            chosen.append(Proxied(url, proxies))
    with ThreadPoolExecutor(3) as pool:  # the Erlang node takes a while to boot
        futures = [pool.submit(server.start) for server in own]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for dependency in chosen:
            dependency.close()
        raise RuntimeError(f"a server of the run did not start: {errors[0]}") from errors[0]
    redis, memcached, rabbitmq = chosen
    return redis, memcached, rabbitmq


def _with_system(
    folder: Path,
    profile: Profile,
    faults: Sequence[Fault],
    proxies: ProxyThread,
    dependencies: dict[str, Dependency],
) -> list[Row]:
    target = urlsplit(POSTGRES)
    postgres = proxies.proxy(target.hostname or "127.0.0.1", target.port or 5432)
    try:
        _log("starting aioshop up --replicas orders=2,products=2")
        urls = {name: dependency.url for name, dependency in dependencies.items()}
        with launch(
            postgres=POSTGRES,
            proxy_port=postgres.port,
            servers=urls,
            workdir=folder,
            products=profile.products,
            base_env=dict(os.environ),
            shared=[name for name, dependency in dependencies.items() if dependency.proxied],
        ) as system:
            _log(f"the system is up: gateway {system.gateway}")
            parts = {**dependencies, "proxies": proxies, "postgres": postgres}
            return _run_system(parts, system, profile, faults)
    finally:
        proxies.call(postgres.stop)


def run(
    profile: Profile,
    faults: Sequence[Fault],
    *,
    reports: Path,
    keep: bool = False,
    proxied: Sequence[str] = (),
) -> tuple[list[Row], Path]:
    """Everything (see the module); the rows and the Markdown report's path. ``proxied``: the
    servers (``redis``, ``memcached``, ``rabbitmq``) to reach through a proxy in front of the
    shared one instead of starting one of the run's own."""
    folder = workdir()
    _log(f"starting Redis, memcached and a RabbitMQ node of the run's own ({folder})")
    proxies = ProxyThread()
    ok = False
    try:
        redis, memcached, rabbitmq = _start_servers(folder, proxies, proxied=proxied)
        dependencies = {"redis": redis, "memcached": memcached, "rabbitmq": rabbitmq}
        try:
            rows = _with_system(folder, profile, faults, proxies, dependencies)
        finally:
            for dependency in dependencies.values():
                dependency.close()
        ok = not any(row.failed for row in rows)
    finally:
        proxies.close()
        if ok and not keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            _log(f"logs kept in {folder}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {"date": stamp, "profile": profile.__dict__, "faults": [f.key for f in faults]}
    text, _ = write(rows, reports, stamp, meta)
    print(markdown(rows))
    return rows, text


def select(only: Sequence[str], skip: Sequence[str]) -> list[Fault]:
    """The faults to run, in their order."""
    known = {fault.key for fault in faults_module.FAULTS}
    unknown = sorted((set(only) | set(skip)) - known)
    if unknown:
        raise ValueError(
            f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return [
        fault
        for fault in faults_module.FAULTS
        if (not only or fault.key in only) and fault.key not in skip
    ]
