"""Orders placed per second and the saga's completion latency, end to end over real RabbitMQ.

Run from the project root::

    .venv/bin/python -m perf.bench_orders [--orders 2000] [--connections 32] [--rate 40]
                                          [--latency-orders 400] [--products 200]

Two services run in their own (spawned) process on uvloop through ``core.runner.run``: the
products service and the orders service, each on a throw-away database (created, migrated and
dropped by this run), on the real RabbitMQ broker through an exchange and queues of this run's
own (deleted afterwards), with Redis namespaces of their own. The catalog is seeded with
``--products`` products, each with far more stock than the run orders. Every order has 1..3
random lines and pays with ``tok_visa``. Two phases, each waiting until every saga has ended:

1. throughput: a closed-loop aiohttp client places ``--orders`` orders with ``--connections``
   concurrent workers, as fast as the orders service answers. Reported: orders answered 202
   per second, the latency of ``POST /api/v1/orders`` (which reads each line's price from the
   products service over HTTP and commits the order's first event, saga row, read model row and
   outbox row), and the saga latency under that overload (it measures the backlog);
2. latency: an open-loop client places ``--latency-orders`` orders at a steady ``--rate`` per
   second (below the saturation point), and reports the saga completion latency, p50 and p99:
   from the client sending ``POST`` to the order's ``order.confirmed`` event being committed
   (placed → outbox relay → RabbitMQ → products reserves → RabbitMQ → orders → payment →
   confirmed), with the host's clock on both ends; and from ``order.placed`` to
   ``order.confirmed`` as the server committed them.

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
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
        db_pool_max_size=20,
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
        db_pool_max_size=20,
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
    seconds: float = 0.0


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


def customer_headers() -> dict[str, str]:
    """The Authorization header of a customer (development key pair)."""
    from core.app import token_codec
    from services.orders import Settings

    codec = token_codec(Settings(env="test"), signing=True)
    token = codec.issue(
        "access", user_id=str(uuid.uuid4()), roles=["customer"], family=str(uuid.uuid4())
    ).token
    return {"Authorization": f"Bearer {token}"}


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    result: Placement,
) -> None:
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
    else:
        result.errors += 1
        result.first_error = result.first_error or problem


async def place_closed_loop(url: str, bodies: list[dict[str, Any]], connections: int) -> Placement:
    """Place ``bodies`` with ``connections`` workers, each sending its next one on an answer."""
    headers = customer_headers()
    result = Placement()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await _post(session, url, queue.get_nowait(), headers, result)

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


async def place_open_loop(url: str, bodies: list[dict[str, Any]], rate: float) -> Placement:
    """Send ``bodies`` at ``rate`` per second, whatever the answers' latency."""
    headers = customer_headers()
    result = Placement()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule of the open loop
            tasks.append(asyncio.create_task(_post(session, url, body, headers, result)))
        await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


async def settle(dsn: str, expected: int) -> dict[str, tuple[float, float, str]]:
    """Wait until every saga ended; per order: placed and final times (epoch s), status."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            left = await conn.fetchval("SELECT count(*) FROM order_sagas WHERE step <> 'done'")
            if left == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} of {expected} sagas still running after the timeout")
            await asyncio.sleep(0.1)
        rows = await conn.fetch(
            """
            SELECT p.order_id,
                   extract(epoch FROM p.occurred_at)::float8 AS placed,
                   extract(epoch FROM f.occurred_at)::float8 AS ended,
                   f.type
              FROM order_events p
              JOIN order_events f ON f.order_id = p.order_id
                                 AND f.type IN ('order.confirmed', 'order.rejected')
             WHERE p.type = 'order.placed'
            """
        )
        return {str(r["order_id"]): (r["placed"], r["ended"], r["type"]) for r in rows}
    finally:
        await conn.close()


def _latencies(
    placement: Placement, outcomes: dict[str, tuple[float, float, str]]
) -> tuple[list[float], list[float], int]:
    confirmed = {
        k: v for k, v in outcomes.items() if k in placement.sent_at and v[2] == "order.confirmed"
    }
    end_to_end = [
        confirmed[oid][1] - sent for oid, sent in placement.sent_at.items() if oid in confirmed
    ]
    server_side = [ended - placed for placed, ended, _ in confirmed.values()]
    return end_to_end, server_side, len(confirmed)


def _ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms"


async def bench(
    servers: dict[str, tuple[BaseProcess, int]],
    products_dsn: str,
    orders_dsn: str,
    args: argparse.Namespace,
) -> bool:
    """Wait for the services, run both phases, print the figures."""
    for process, port in servers.values():
        await wait_ready(f"http://{HOST}:{port}/readyz", process)
    products = await product_ids(products_dsn)
    url = f"http://{HOST}:{servers['orders'][1]}/api/v1/orders"

    burst = await place_closed_loop(url, order_bodies(products, args.orders, 1), args.connections)
    outcomes = await settle(orders_dsn, len(burst.sent_at))
    burst_e2e, _, burst_confirmed = _latencies(burst, outcomes)
    ends = [outcomes[oid][1] for oid in burst.sent_at if oid in outcomes]
    burst_span = max(ends) - min(burst.sent_at.values()) if ends else float("nan")
    steady = await place_open_loop(url, order_bodies(products, args.latency_orders, 2), args.rate)
    outcomes = await settle(orders_dsn, len(steady.sent_at))
    steady_e2e, steady_server, steady_confirmed = _latencies(steady, outcomes)

    placed = len(burst.sent_at)
    print(f"\n1. throughput: {placed} orders, {args.connections} concurrent closed-loop clients")
    print(f"   placed (202): {placed / burst.seconds:.0f} orders/s ({burst.seconds:.2f} s)")
    print(f"   POST /api/v1/orders latency: {_ms(burst.latencies)}")
    print(f"   saga completion under this overload (backlog): {_ms(burst_e2e)}")
    print(
        f"   sagas completed end to end: {burst_confirmed / burst_span:.0f} orders/s "
        f"(first POST to last order.confirmed: {burst_span:.2f} s)"
    )
    print(
        f"2. latency: {len(steady.sent_at)} orders, open loop at {args.rate:g} orders/s "
        f"(achieved {len(steady.sent_at) / steady.seconds:.1f}/s)"
    )
    print(f"   POST /api/v1/orders latency: {_ms(steady.latencies)}")
    print(f"   saga completion, client POST -> order.confirmed committed: {_ms(steady_e2e)}")
    print(
        f"   saga completion, order.placed -> order.confirmed (server clock): {_ms(steady_server)}"
    )
    print(
        f"setup: products and orders services in one process each on uvloop, real PostgreSQL, "
        f"Redis and RabbitMQ; the load generator runs in the benchmark process and shares the "
        f"machine's {os.cpu_count()} cores with both services and every server, so the figures "
        "are relative, not absolute capacity."
    )
    errors = burst.errors + steady.errors
    unconfirmed = placed - burst_confirmed + len(steady.sent_at) - steady_confirmed
    for name, phase in (("throughput", burst), ("latency", steady)):
        if phase.errors:
            print(f"ERRORS ({name}): {phase.errors} failed placements (first: {phase.first_error})")
    if unconfirmed:
        print(f"ERRORS: {unconfirmed} orders were not confirmed")
    if errors or unconfirmed:
        print("RESULT INVALID: the run had errors or unconfirmed orders")
    return not (errors or unconfirmed)


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
    parser.add_argument("--orders", type=int, default=2000, help="orders of the throughput phase")
    parser.add_argument("--connections", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--rate", type=float, default=40.0, help="orders/s of the latency phase")
    parser.add_argument(
        "--latency-orders", type=int, default=400, help="orders of the latency phase"
    )
    parser.add_argument("--products", type=int, default=200, help="products to seed")
    args = parser.parse_args(argv)
    if min(args.orders, args.connections, args.latency_orders) < 1 or args.products < 3:
        parser.error("--orders, --connections, --latency-orders >= 1, --products >= 3")
    if args.rate <= 0:
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
