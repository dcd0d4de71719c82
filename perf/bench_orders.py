"""Orders sagas completed per second and their completion latency, end to end over RabbitMQ.

Run from the project root::

    .venv/bin/python -m perf.bench_orders [--duration 20] [--connections 32] [--rate R]
                                          [--products 200]

Two services run in their own (spawned) process on uvloop through ``core.runner.run``: the
products service and the orders service, each on a throw-away database (created, migrated and
dropped by this run), on the real RabbitMQ broker through an exchange and queues of this run's
own (deleted afterwards), with Redis namespaces of their own. The catalog is seeded with
``--products`` products, each with far more stock than the run orders; every order has 1..3
random lines of them (spread like real traffic: no single hot product) and pays with
``tok_visa``. A saga is complete when its ``order.confirmed`` (or ``order.rejected``) event is
committed; its completion latency runs from the client sending ``POST /api/v1/orders`` to that
commit (placed → outbox relay → RabbitMQ → products reserves → RabbitMQ → orders → payment →
confirmed), with the host's clock on both ends. Phases (``measure_against``, which a table
runner calls on a system already running):

1. sustained: ``--connections`` closed-loop clients, each placing an order and waiting for its
   saga to complete before the next, for ``--duration`` seconds: sagas completed per second,
   with a backlog that cannot grow (at most ``--connections`` sagas in flight);
2. latency: an open loop placing orders at ``--rate`` per second (default: 80 % of what phase 1
   sustained) for ``--duration`` seconds: completion latency p50 and p99, and whether the
   completions kept up.

Both are measured against a system that can keep up: an overload (placing faster than sagas
complete) only measures the backlog it builds.

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp

from perf.bench_users_me import (
    HOST,
    PG,
    REDIS_URL,
    REQUEST_TIMEOUT,
    cleanup_storage,
    free_port,
    stop,
    wait_ready,
)

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SETTLE_TIMEOUT = 120.0


def serve_products(port: int, dsn: str, namespace: str, exchange: str, queue: str) -> None:
    """Process target: the products service on the run's exchange."""
    from core.bus.amqp import AmqpTransport
    from core.logging import configure_logging
    from core.runner import run
    from services.products import Settings, create_products_app

    settings = Settings(
        env="test",
        database_url=dsn,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        bus_transport="amqp",
        bus_queue=queue,
        log_level="WARNING",
        log_format="text",
    )
    configure_logging("products", level=settings.log_level, fmt=settings.log_format)
    transport = AmqpTransport(AMQP_URL, exchange=exchange)
    run(create_products_app(settings, transport=transport), host=HOST, port=port)


def serve_orders(
    port: int, dsn: str, namespace: str, exchange: str, queue: str, products_url: str
) -> None:
    """Process target: the orders service on the run's exchange."""
    from core.logging import configure_logging
    from core.runner import run
    from services.orders import Settings, create_orders_app

    settings = Settings(
        env="test",
        database_url=dsn,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        bus_transport="amqp",
        bus_exchange=exchange,
        bus_queue=queue,
        products_url=products_url,
        log_level="WARNING",
        log_format="text",
        saga_poll_interval=0.2,
    )
    configure_logging("orders", level=settings.log_level, fmt=settings.log_format)
    run(create_orders_app(settings), host=HOST, port=port)


@dataclass
class Placement:
    """What the client saw of the placement phase."""

    sent_at: dict[str, float] = field(default_factory=dict)  # order id -> time.time() at send
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index] * 1000


async def product_ids(dsn: str) -> list[str]:
    """The seeded products, given stock enough for the whole run."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("UPDATE inventory SET on_hand = 10000000")
        return [str(r["id"]) for r in await conn.fetch("SELECT id FROM products")]
    finally:
        await conn.close()


def order_bodies(products: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` order bodies of 1..3 random lines."""
    rng = random.Random(seed)
    return [
        {
            "items": [
                {"product_id": pid, "quantity": rng.randint(1, 3)}
                for pid in rng.sample(products, rng.randint(1, 3))
            ],
            "shipping_address": {"name": "Bench", "line1": "1 Loop Road", "city": "Localhost"},
            "payment": {"token": "tok_visa"},
        }
        for _ in range(count)
    ]


def customer_token() -> str:
    """An access token of a new customer (development key pair)."""
    from core.app import token_codec
    from services.orders import Settings

    codec = token_codec(Settings(env="test"), signing=True)
    return codec.issue(
        "access", user_id=str(uuid.uuid4()), roles=["customer"], family=str(uuid.uuid4())
    ).token


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    result: Placement,
) -> str | None:
    """Place one order; its id (``None``: counted as an error)."""
    sent, t0 = time.time(), time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as response:
            payload = await response.json(content_type=None)
            ok = response.status == 202
            problem = f"HTTP {response.status}: {payload}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        ok, problem, payload = False, repr(exc), None
    if ok:
        result.latencies.append(time.perf_counter() - t0)
        result.sent_at[payload["id"]] = sent
        return str(payload["id"])
    result.errors += 1
    result.first_error = result.first_error or problem
    return None


@dataclass(frozen=True)
class OrdersRow:
    """What ``measure_against`` measured: sagas completed end to end.

    ``orders_per_s``: sagas completed (confirmed or rejected) per second over the window from
    the first ``POST`` to the last completion; ``p50_ms``/``p99_ms``: completion latency, client
    ``POST`` to the final event committed; ``errors``: failed placements plus sagas that did
    not end confirmed (rejected, or not done by the settle timeout).
    """

    mode: str
    placed: int
    confirmed: int
    orders_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    seconds: float
    first_error: str | None = None


class _Completions:
    """Watches the orders database for the final event of the orders placed, by polling."""

    FINAL = ("order.confirmed", "order.rejected")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.waiting: dict[uuid.UUID, asyncio.Future[tuple[float, str]]] = {}

    def expect(self, order_id: str) -> asyncio.Future[tuple[float, str]]:
        """A future of the order's completion: (epoch seconds of the commit, event type)."""
        future = asyncio.get_running_loop().create_future()
        self.waiting[uuid.UUID(order_id)] = future
        return future

    async def poll(self, interval: float = 0.01) -> None:
        """Resolve the futures of completed orders until cancelled."""
        while True:
            if self.waiting:
                rows = await self.conn.fetch(
                    """
                    SELECT order_id, type, extract(epoch FROM occurred_at)::float8 AS at
                      FROM order_events WHERE order_id = ANY($1::uuid[]) AND type = ANY($2)
                    """,
                    list(self.waiting),
                    list(self.FINAL),
                )
                for row in rows:
                    future = self.waiting.pop(row["order_id"], None)
                    if future is not None and not future.done():
                        future.set_result((row["at"], row["type"]))
            await asyncio.sleep(interval)  # the polling period, not a wait for a race


async def measure_against(
    base_url: str,
    orders_dsn: str,
    products: list[str],
    *,
    rate: float | None,
    duration: float,
    token: str,
    concurrency: int = 32,
    seed: int = 0,
) -> OrdersRow:
    """Place orders through ``base_url`` (an orders service, or the gateway in front of it) for
    ``duration`` seconds and read their sagas' completion from ``orders_dsn``.

    ``rate=None``: ``concurrency`` closed-loop clients, each placing an order and waiting for
    its saga to complete before the next (the sustained rate); else an open loop placing
    ``rate`` orders per second, whatever the answers. ``token``: a customer's bearer token.
    ``products``: ids of products with stock enough for every order. Only the final events of
    the orders placed here are counted, so the system may carry other traffic.
    """
    import asyncpg

    url = base_url.rstrip("/") + "/api/v1/orders"
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(seed)
    result = Placement()
    ends: dict[str, tuple[float, str]] = {}
    conn = await asyncpg.connect(orders_dsn)
    watcher = _Completions(conn)
    poller = asyncio.create_task(watcher.poll())
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=max(concurrency, 100))

    async def one(session: aiohttp.ClientSession) -> None:
        body = order_bodies(products, 1, rng.getrandbits(32))[0]
        order_id = await _post(session, url, body, headers, result)
        if order_id is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SETTLE_TIMEOUT):
                    ends[order_id] = await watcher.expect(order_id)

    start = time.perf_counter()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if rate is None:

                async def client() -> None:
                    while time.perf_counter() - start < duration:
                        await one(session)

                await asyncio.gather(*(client() for _ in range(concurrency)))
            else:
                tasks = []
                for i in range(max(1, round(rate * duration))):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)  # the schedule of the open loop
                    tasks.append(asyncio.create_task(one(session)))
                await asyncio.gather(*tasks)
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await conn.close()
    seconds = time.perf_counter() - start
    latencies = [ends[oid][0] - sent for oid, sent in result.sent_at.items() if oid in ends]
    confirmed = sum(1 for _, kind in ends.values() if kind == "order.confirmed")
    span = max((at for at, _ in ends.values()), default=0.0) - min(
        result.sent_at.values(), default=0.0
    )
    placed = len(result.sent_at)
    return OrdersRow(
        mode="closed loop" if rate is None else f"open loop at {rate:g}/s",
        placed=placed,
        confirmed=confirmed,
        orders_per_s=len(ends) / span if ends and span > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        errors=result.errors + placed - confirmed,
        seconds=seconds,
        first_error=result.first_error,
    )


def _row(name: str, row: OrdersRow) -> None:
    print(
        f"{name}: {row.orders_per_s:.0f} sagas completed/s ({row.mode}, {row.placed} placed, "
        f"{row.confirmed} confirmed, {row.seconds:.1f} s); completion p50 {row.p50_ms:.1f} ms, "
        f"p99 {row.p99_ms:.1f} ms"
    )
    if row.errors:
        print(f"   ERRORS: {row.errors} (failed placements or unconfirmed; {row.first_error})")


async def bench(
    servers: dict[str, tuple[BaseProcess, int]],
    products_dsn: str,
    orders_dsn: str,
    args: argparse.Namespace,
) -> bool:
    """Wait for the services, run the phases, print the figures."""
    for process, port in servers.values():
        await wait_ready(f"http://{HOST}:{port}/readyz", process)
    products = await product_ids(products_dsn)
    base = f"http://{HOST}:{servers['orders'][1]}"
    token = customer_token()
    await measure_against(  # warm-up: connections, caches, prepared statements
        base, orders_dsn, products, rate=None, duration=2, token=token, concurrency=4, seed=9
    )
    sustained = await measure_against(
        base,
        orders_dsn,
        products,
        rate=None,
        duration=args.duration,
        token=token,
        concurrency=args.connections,
        seed=1,
    )
    _row(f"1. sustained, {args.connections} closed-loop clients", sustained)
    rate = args.rate or max(1.0, round(0.8 * sustained.orders_per_s))
    steady = await measure_against(
        base, orders_dsn, products, rate=rate, duration=args.duration, token=token, seed=2
    )
    _row("2. latency", steady)
    if steady.orders_per_s < 0.9 * rate:
        print(f"   the completions did not keep up with {rate:g} orders/s")
    errors = sustained.errors + steady.errors
    print(
        f"setup: products and orders services in one process each on uvloop, real PostgreSQL, "
        f"Redis and RabbitMQ; the load generator runs in the benchmark process and shares the "
        f"machine's {os.cpu_count()} cores with both services and every server, so the figures "
        "are relative, not absolute capacity."
    )
    if errors:
        print("RESULT INVALID: the run had errors or unconfirmed orders")
    return not errors


async def delete_topology(exchange: str, queues: list[str]) -> None:
    """Delete the run's exchange and queues (with their retry and parking queues)."""
    from core.bus import RetryPolicy
    from core.bus.amqp import AmqpTransport, delay_queue_name, parking_queue_name

    names: list[str] = []
    for queue in queues:
        names += [queue, parking_queue_name(queue)]
        names += [delay_queue_name(queue, d) for d in RetryPolicy().delays]
    transport = AmqpTransport(AMQP_URL, exchange=exchange)
    await transport.start()
    try:
        await transport.delete_topology(names, exchange=True)
    finally:
        await transport.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 only for a complete run without errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each phase")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop clients")
    parser.add_argument(
        "--rate", type=float, default=None, help="orders/s of the latency phase (80 %% of 1.)"
    )
    parser.add_argument("--products", type=int, default=200, help="products to seed")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.products < 3 or args.duration <= 0:
        parser.error("--connections >= 1, --products >= 3, --duration > 0")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be > 0")

    import uvloop

    import migrations
    from services.products.seed import seed

    run_id = uuid.uuid4().hex[:8]
    products_dsn = f"{PG}/bench_orders_products_{run_id}"
    orders_dsn = f"{PG}/bench_orders_orders_{run_id}"
    namespace = f"bench-{run_id}"
    exchange = f"bench-orders-{run_id}"
    queues = {"products": f"bench-products-{run_id}", "orders": f"bench-orders-{run_id}"}
    ctx = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    try:
        migrations.upgrade("products", products_dsn)
        migrations.upgrade("orders", orders_dsn)
        asyncio.run(seed(products_dsn, products=args.products, categories=10, random_seed=1))
        products_port, orders_port = free_port(), free_port()
        servers: dict[str, tuple[BaseProcess, int]] = {
            "products": (
                ctx.Process(
                    target=serve_products,
                    args=(
                        products_port,
                        products_dsn,
                        f"{namespace}:products",
                        exchange,
                        queues["products"],
                    ),
                    name="products",
                ),
                products_port,
            ),
            "orders": (
                ctx.Process(
                    target=serve_orders,
                    args=(
                        orders_port,
                        orders_dsn,
                        f"{namespace}:orders",
                        exchange,
                        queues["orders"],
                        f"http://{HOST}:{products_port}",
                    ),
                    name="orders",
                ),
                orders_port,
            ),
        }
        processes += [process for process, _ in servers.values()]
        for process in processes:
            process.start()
        ok = uvloop.run(bench(servers, products_dsn, orders_dsn, args))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 2
    finally:
        stop(processes)
        for dsn in (products_dsn, orders_dsn):
            try:
                asyncio.run(cleanup_storage(dsn, namespace))
            except Exception as exc:
                print(f"cleanup failed, drop {dsn} by hand: {exc!r}", file=sys.stderr)
        try:
            asyncio.run(delete_topology(exchange, list(queues.values())))
        except Exception as exc:
            print(f"cleanup of the broker failed: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
