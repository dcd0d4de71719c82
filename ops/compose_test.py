"""The system test in containers (``make compose-test``), on what ``make compose-up`` started.

Only 127.0.0.1 (the gateway's published port) and the containers of the compose project's own
network are ever addressed. In order:

1. the README's curl flow through https://127.0.0.1:8000: register, log in, list products,
   place an order, see it confirmed;
2. a products replica killed with SIGKILL under a read load (its process, from the host:
   ``docker kill`` would count as a manual stop, which the restart policy leaves alone): no read
   may fail, the restart policy brings it back healthy (time measured);
3. the broker restarted, 4a. paused for 20 s (``docker pause``: hung, not down), 4b. the orders
   container cut off its network for 20 s (``docker network disconnect``), each while orders are
   placed: every accepted order reaches a final state, none lost or duplicated, and the
   invariants of ``ops.invariants`` hold; recovery = from the fault's end to a new order
   confirmed;
5. ``docker compose down`` and ``up`` again without ``-v``: every account and order survives;
6. the image started with its default environment (on 0.0.0.0) refuses the development key.

A table of figures (build, image sizes, time to ready, memory per container, recoveries,
orders placed / final / lost) is printed and written to docs/containers.md; the exit status
is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from ops.compose_shop import (
    API,
    Accounting,
    OrderLoad,
    ReadLoad,
    Shopper,
    figures_table,
)
from ops.invariants import check_invariants

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ROOT / "deploy" / "secrets"
ENV_FILE = ROOT / "deploy" / "images" / "images.env"
FIGURES = Path(os.environ.get("AIOSHOP_DOCKER_ROOT", "/var/lib/aioshop-docker")) / "figures.json"
BASE = "https://127.0.0.1:8000"
ADMIN_EMAIL = "compose-test-admin@example.com"
HOLD = 20.0  # seconds a pause or a disconnection lasts


def _log(message: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sh(*args: str, check: bool = True, timeout: float = 600) -> str:
    """Run a command; its standard output."""
    result = subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ...: {result.returncode} {result.stderr[-800:]}")
    return result.stdout


def compose(*args: str, check: bool = True, timeout: float = 600) -> str:
    """``docker compose`` with the images ``make images`` chose."""
    env_file = ["--env-file", str(ENV_FILE)] if ENV_FILE.exists() else []
    return sh("docker", "compose", *env_file, *args, check=check, timeout=timeout)


def containers(service: str) -> list[str]:
    """The ids of a service's containers."""
    return compose("ps", "-q", service).split()


def inspect(container: str) -> dict[str, Any]:
    """``docker inspect`` of one container."""
    data: list[dict[str, Any]] = json.loads(sh("docker", "inspect", container))
    return data[0]


def project_network(container: str) -> tuple[str, str]:
    """The compose project's default network of ``container``, and its address there."""
    networks = inspect(container)["NetworkSettings"]["Networks"]
    name = next(n for n in networks if n.endswith("_default"))
    return name, str(networks[name]["IPAddress"])


def secret(name: str) -> str:
    return (SECRETS / name).read_text(encoding="utf-8").strip()


def dsns() -> tuple[str, str, str]:
    """orders, products and AMQP URLs at the containers' addresses (they change on ``up``)."""
    _, pg = project_network(containers("postgres")[0])
    _, mq = project_network(containers("rabbitmq")[0])
    password = secret("postgres_password")
    base = f"postgresql://postgres:{password}@{pg}:5432"
    amqp = f"amqp://aioshop:{secret('rabbitmq_password')}@{mq}:5672/"
    return f"{base}/aioshop_orders", f"{base}/aioshop_products", amqp


async def poll(condition: Callable[[], Awaitable[Any]], within: float, every: float = 0.5) -> Any:
    """``condition()`` until truthy (its value), ``None`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(every)
    return None


@dataclass
class Run:
    """What the test measured and what failed."""

    tls: ssl.SSLContext
    figures: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    shoppers: list[Shopper] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    admin_password: str = field(default_factory=lambda: f"adm-{uuid.uuid4().hex}")

    def check(self, ok: bool, what: str) -> None:
        _log(("ok: " if ok else "FAILED: ") + what)
        if not ok:
            self.failures.append(what)

    def figure(self, what: str, value: str) -> None:
        _log(f"{what}: {value}")
        self.figures.append((what, value))


def curl(run: Run, method: str, path: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    """One request with curl, as the README does it."""
    args = ["curl", "-sS", "--cacert", str(SECRETS / "gateway_tls_cert"), "-X", method]
    args += ["-w", "\n%{http_code}", BASE + path]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        args += ["-H", f"Idempotency-Key: {uuid.uuid4()}"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    out = sh(*args)
    text, _, status = out.rpartition("\n")
    return int(status), json.loads(text) if text.strip() else None


async def setup(run: Run) -> None:
    """An admin, products in stock (seeded when the catalogue is empty), four shoppers."""
    compose(
        "exec", "-T", "-e", f"ADMIN_PW={run.admin_password}", "users", "aioshop", "create-admin",
        ADMIN_EMAIL, "--password-env", "ADMIN_PW", "--promote-existing",
    )  # fmt: skip
    status, page = curl(run, "GET", f"{API}/products?limit=8&in_stock=true")
    if status != 200 or len(page["items"]) < 8:
        compose("exec", "-T", "products", "aioshop", "seed", "--products", "200", "--seed", "19")
        status, page = curl(run, "GET", f"{API}/products?limit=8&in_stock=true")
    run.products = [str(item["id"]) for item in page["items"]]
    admin = Shopper(BASE, run.tls, "admin")
    admin.email, admin.password = ADMIN_EMAIL, run.admin_password
    async with aiohttp.ClientSession() as session:
        await admin.login(session)
        for product in run.products:
            path = f"{API}/products/{product}/inventory"
            status, body = await admin.call(session, "PUT", path, body={"on_hand": 1_000_000})
            if status != 200:
                raise RuntimeError(f"restock {product}: {status} {body}")
        # Three: the gateway allows 10 logins and registrations a minute from one address.
        run.shoppers = [Shopper(BASE, run.tls, f"shopper{i}") for i in range(3)]
        for shopper in run.shoppers:
            await shopper.register(session)


def readme_flow(run: Run) -> None:
    """(1) register, log in, list products, order, confirmed, its events, log out."""
    email, password = f"alice-{uuid.uuid4().hex[:8]}@example.com", "correct horse"
    account = {"email": email, "password": password, "full_name": "Alice"}
    status, _ = curl(run, "POST", f"{API}/auth/register", account)
    run.check(status == 201, f"README: register {status}")
    status, body = curl(run, "POST", f"{API}/auth/login", {"email": email, "password": password})
    token = body["access_token"]
    status, page = curl(run, "GET", f"{API}/products?q=lamp&in_stock=true&sort=price&limit=3")
    run.check(status == 200, f"README: search {status}")
    _, page = curl(run, "GET", f"{API}/products?in_stock=true&limit=1")
    order = {
        "items": [{"product_id": page["items"][0]["id"], "quantity": 1}],
        "shipping_address": {"line1": "1 Main St", "city": "Springfield"},
        "payment": {"token": "tok_visa"},
    }
    status, placed = curl(run, "POST", f"{API}/orders", order, token)
    run.check(status in (200, 201, 202), f"README: order placed {status}")
    deadline = time.monotonic() + 30
    current = placed
    while current.get("status") == "pending" and time.monotonic() < deadline:
        time.sleep(0.3)  # polling the order's status, as a customer would
        _, current = curl(run, "GET", f"{API}/orders/{placed['id']}", token=token)
    run.check(current.get("status") == "confirmed", f"README: order {current.get('status')}")
    status, _ = curl(run, "GET", f"{API}/orders/{placed['id']}/events", token=token)
    run.check(status == 200, f"README: order events {status}")
    status, _ = curl(run, "POST", f"{API}/auth/logout", token=token)
    run.check(status == 204, f"README: logout {status}")


async def kill_replica(run: Run) -> None:
    """(2) SIGKILL one products replica under a read load."""
    load = ReadLoad(BASE, run.tls)
    load.start()
    await poll(lambda: _true(load.reads >= 20), 60)
    victim = containers("products")[0]
    restarts = inspect(victim)["RestartCount"]
    # SIGKILL to the container's process, as a crash would: `docker kill` counts as a manual
    # stop for the engine (20.10), which then ignores the restart policy.
    os.kill(inspect(victim)["State"]["Pid"], signal.SIGKILL)
    killed = time.monotonic()

    async def healthy_again() -> bool:
        state = inspect(victim)
        health = state["State"].get("Health", {}).get("Status")
        return bool(state["RestartCount"] > restarts and health == "healthy")

    back = await poll(healthy_again, 120)
    recovery = time.monotonic() - killed
    reads_until = load.reads + 20
    await poll(lambda: _true(load.reads >= reads_until), 60)
    await load.stop()
    run.check(bool(back), "products replica back healthy by the restart policy")
    run.check(not load.failures, f"0 failed reads of {load.reads} ({load.failures[:5]})")
    run.figure("products replica SIGKILL: healthy again", f"{recovery:.1f} s")
    run.figure("reads during the kill (failed)", f"{load.reads} ({len(load.failures)})")


async def _true(value: bool) -> bool:
    return value


async def confirmed_order(run: Run, within: float) -> float | None:
    """Seconds until an order placed from now is confirmed (``None``: not within)."""
    started = time.monotonic()
    shopper = run.shoppers[0]
    probe = OrderLoad([shopper], run.products[:1], give_up=within)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while time.monotonic() - started < within:
            await probe.place(session, shopper, run.products[0])
            order_id = next(reversed(probe.ledger.orders.values()), None)
            if order_id is None:
                continue

            async def final(order_id: str = order_id) -> str | None:
                try:
                    status, body = await shopper.call(session, "GET", f"{API}/orders/{order_id}")
                except (aiohttp.ClientError, TimeoutError):
                    return None
                value = body.get("status") if status == 200 else None
                return None if value in (None, "pending") else str(value)

            if await poll(final, within - (time.monotonic() - started)) == "confirmed":
                return time.monotonic() - started
    return None


async def orders_of(shoppers: list[Shopper]) -> dict[str, str]:
    """Every order of ``shoppers`` in the orders database: id -> status."""
    orders_dsn, _, _ = dsns()
    conn = await asyncpg.connect(orders_dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text, status FROM order_views WHERE user_id = ANY($1::uuid[])",
            [s.user_id for s in shoppers],
        )
    finally:
        await conn.close()
    return {row["id"]: row["status"] for row in rows}


async def settle(run: Run, load: OrderLoad, label: str, before: set[str]) -> Accounting:
    """Wait for every accepted order to be final; account for them (the orders of the load's
    shoppers but those in ``before``, placed earlier); check the invariants."""
    orders_dsn, products_dsn, amqp = dsns()

    async def stored() -> dict[str, str]:
        current = await orders_of(list(load.shoppers))
        return {i: status for i, status in current.items() if i not in before}

    async def all_final() -> Accounting | None:
        accounting = load.ledger.account(await stored())
        return accounting if not accounting.pending else None

    accounting = await poll(all_final, 120, every=1.0) or load.ledger.account(await stored())
    run.check(
        accounting.ok,
        f"{label}: {accounting.placed} accepted orders, lost {accounting.lost[:5]}, "
        f"duplicated {accounting.duplicated[:5]}, pending {accounting.pending[:5]}",
    )
    violations = await check_invariants(
        orders_dsn, products_dsn, deadline=60, amqp_url=amqp, parking_queues=["orders", "products"]
    )
    run.check(not violations, f"{label}: invariants ({violations[:3]})")
    return accounting


async def under_orders(run: Run, label: str, fault: Callable[[], None]) -> None:
    """(3), (4): ``fault`` (blocking: it lasts its time) while orders are placed."""
    load = OrderLoad(run.shoppers[1:], run.products[1:])  # the first one is the probe
    before = set(await orders_of(list(load.shoppers)))
    load.start()
    await poll(lambda: _true(len(load.ledger.orders) >= 10), 120)
    started = time.monotonic()
    await asyncio.to_thread(fault)
    ended = time.monotonic()
    recovery = await confirmed_order(run, 180)
    after = len(load.ledger.orders) + 10
    await poll(lambda: _true(len(load.ledger.orders) >= after), 120)
    await load.stop()
    accounting = await settle(run, load, label, before)
    run.check(recovery is not None, f"{label}: an order confirmed after the fault")
    took = "never" if recovery is None else f"{recovery:.1f} s"
    run.figure(
        f"{label}: fault lasted / order confirmed after", f"{ended - started:.1f} s / {took}"
    )
    run.figure(
        f"{label}: orders placed / final / lost / duplicated (client retries)",
        f"{accounting.placed} / {accounting.final} / {len(accounting.lost)} / "
        f"{len(accounting.duplicated)} ({load.ledger.refused})",
    )


def restart_broker() -> None:
    compose("restart", "rabbitmq")


def pause_broker() -> None:
    [broker] = containers("rabbitmq")
    sh("docker", "pause", broker)
    try:
        time.sleep(HOLD)  # the fault's length
    finally:
        sh("docker", "unpause", broker)


def disconnect_orders() -> None:
    [orders] = containers("orders")
    network, _ = project_network(orders)
    sh("docker", "network", "disconnect", network, orders)
    try:
        time.sleep(HOLD)  # the fault's length
    finally:  # back under its service name, which the gateway resolves
        sh("docker", "network", "connect", "--alias", "orders", network, orders)


async def snapshot() -> tuple[dict[str, str], dict[str, str]]:
    """Every order (id -> status) and account (id -> email) in the databases."""
    orders_dsn, _, _ = dsns()
    users_dsn = orders_dsn.rsplit("/", 1)[0] + "/aioshop_users"
    result = []
    for dsn, query in (
        (orders_dsn, "SELECT id::text, status FROM order_views"),
        (users_dsn, "SELECT id::text, email FROM users"),
    ):
        conn = await asyncpg.connect(dsn)
        try:
            result.append({row[0]: row[1] for row in await conn.fetch(query)})
        finally:
            await conn.close()
    return result[0], result[1]


async def down_and_up(run: Run) -> None:
    """(5) ``down`` and ``up`` without ``-v``: every order and account is still there."""
    orders, accounts = await snapshot()
    compose("down", timeout=300)
    started = time.monotonic()
    compose("up", "-d", "--wait", "--no-build", timeout=600)
    run.figure("time to ready: up again on kept volumes", f"{time.monotonic() - started:.0f} s")
    orders_after, accounts_after = await snapshot()
    run.check(orders_after == orders, f"down/up: {len(orders)} orders kept with their status")
    run.check(accounts_after == accounts, f"down/up: {len(accounts)} accounts kept")
    kept = sum(1 for i, status in orders.items() if orders_after.get(i) == status)
    kept_accounts = sum(1 for i, email in accounts.items() if accounts_after.get(i) == email)
    run.figure(
        "down/up without -v: orders / accounts kept",
        f"{kept} of {len(orders)} / {kept_accounts} of {len(accounts)}",
    )
    async with aiohttp.ClientSession() as session:
        for shopper in run.shoppers:  # the sessions survive too (Redis on its volume)
            status, _ = await shopper.call(session, "GET", f"{API}/orders?limit=1")
            run.check(status == 200, f"down/up: {shopper.email}'s session still valid ({status})")
        await run.shoppers[0].login(session)  # raises when the account is gone
    run.check(True, "down/up: a shopper logs in again")


def refuses_dev_key(run: Run) -> None:
    """(6) the image with its default environment (0.0.0.0, production) does not start."""
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "aioshop:latest"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    said = (result.stdout + result.stderr).lower()
    run.figure("default image on 0.0.0.0: exit status", f"{result.returncode} (development key)")
    run.check(
        result.returncode != 0 and "development" in said,
        f"default image refuses the development key (exit {result.returncode})",
    )


def memory(run: Run) -> None:
    out = sh("docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}")
    for line in sorted(out.splitlines()):
        name, usage = line.split("\t")
        run.figure(f"memory {name}", usage.replace(" / ", " of "))


def build_figures(run: Run) -> None:
    """What ``make images`` and ``make compose-up`` recorded (deploy/images/kit.py)."""
    try:
        recorded = json.loads(FIGURES.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for what, value in recorded.items():
        run.figure(what, str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--skip-faults", action="store_true", help="only (1), (2), (5), (6)")
    args = parser.parse_args(argv)
    tls = ssl.create_default_context(cafile=str(SECRETS / "gateway_tls_cert"))
    run = Run(tls)
    build_figures(run)

    async def scenarios() -> None:
        await setup(run)
        readme_flow(run)
        await kill_replica(run)
        if not args.skip_faults:
            await under_orders(run, "broker restarted", restart_broker)
            await under_orders(run, f"broker paused {HOLD:g} s", pause_broker)
            await under_orders(run, f"orders disconnected {HOLD:g} s", disconnect_orders)
        memory(run)
        await down_and_up(run)

    try:
        asyncio.run(scenarios())
    except Exception as exc:
        run.check(False, f"aborted: {type(exc).__name__}: {exc}")
    refuses_dev_key(run)
    table = figures_table(run.figures)
    verdict = "passed" if not run.failures else f"FAILED: {'; '.join(run.failures)}"
    print(table + f"\n{verdict}")
    (ROOT / "docs" / "containers.md").write_text(
        "# The system in containers: figures\n\n"
        "Written by `make compose-test` (ops/compose_test.py) on "
        f"{time.strftime('%Y-%m-%d')}: see the README, Containers.\n\n"
        + table
        + f"\nResult: {verdict}\n",
        encoding="utf-8",
    )
    return 0 if not run.failures else 1


if __name__ == "__main__":
    sys.exit(main())
