"""Throughput and latency of ``GET /api/v1/products/{id}``: cached, uncached, and a bare aiohttp
JSON handler, in the same run.

Run from the project root::

    .venv/bin/python -m perf.bench_products [--duration 10] [--connections 32] [--products 1000]

Three servers run in their own (spawned) process on uvloop through ``core.runner.run``: a bare
aiohttp app answering a product-shaped JSON body, the products service with its cache (in-process,
Redis and memcached tiers) and the same service with ``cache_enabled=False`` (every read a
PostgreSQL query). Both services read a throw-away database seeded with ``--products`` products
(created, migrated and dropped by this run), use a Redis namespace of their own and the
in-memory bus (nothing is published to the broker). One closed-loop aiohttp client in this
process loads each server in turn, for the same duration, after a discarded warm-up, always
asking for the same (hot) product. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import uuid
from multiprocessing.process import BaseProcess

from aiohttp import web

from perf.bench_users_me import (
    HOST,
    PG,
    READY_TIMEOUT,
    REDIS_URL,
    REQUEST_TIMEOUT,
    WARMUP,
    Result,
    cleanup_storage,
    free_port,
    load,
    stop,
    wait_ready,
)

BASELINE = "bare aiohttp JSON handler in the same run"
PRODUCT = {  # the shape and size of a ProductOut body of a seeded product
    "id": "3f0c8a4e-2b7d-4c61-9a0e-5d2f1b7c8e90",
    "sku": "SEED-A1B2C3-0000042",
    "name": "Ergonomic Walnut Desk Lamp",
    "description": "Ergonomic teal desk lamp in walnut, easy to clean. Perfect for small spaces.",
    "price_cents": 4599,
    "currency": "USD",
    "category_id": "5420c491-2751-4b54-bff9-b5c56567db96",
    "attributes": {"color": "teal", "material": "walnut", "weight_g": 1840, "rating": 4.4},
    "stock": 212,
    "created_at": "2025-01-01T12:00:00.000000Z",
    "updated_at": "2025-01-01T12:00:00.000000Z",
}


def serve_bare(port: int) -> None:
    """Process target: a bare aiohttp app with one JSON handler, on uvloop."""
    from core.runner import run

    async def product(request: web.Request) -> web.Response:
        return web.json_response(PRODUCT)

    app = web.Application()
    app.router.add_get("/", product)
    run(app, host=HOST, port=port)


def serve_products(port: int, dsn: str, namespace: str, cached: bool) -> None:
    """Process target: the products service on uvloop, with or without its cache."""
    from core.logging import configure_logging
    from core.runner import run
    from services.products.app import create_products_app
    from services.products.settings import Settings

    settings = Settings(
        env="test",
        database_url=dsn,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        bus_transport="memory",
        cache_enabled=cached,
        log_level="WARNING",
        log_format="text",
    )
    configure_logging("products", level=settings.log_level, fmt=settings.log_format)
    run(create_products_app(settings), host=HOST, port=port)


async def hot_product(dsn: str) -> str:
    """The id of one seeded product."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT id FROM products ORDER BY sku LIMIT 1"))
    finally:
        await conn.close()


async def bench(
    servers: dict[str, tuple[BaseProcess, int]], product_id: str, args: argparse.Namespace
) -> list[Result]:
    """Wait for the servers, then load each in turn."""
    bare, bare_port = servers["bare"]
    await wait_ready(f"http://{HOST}:{bare_port}/", bare)
    for name in ("cached", "uncached"):
        process, port = servers[name]
        await wait_ready(f"http://{HOST}:{port}/readyz", process)
    path = f"/api/v1/products/{product_id}"
    targets = [
        ("bare aiohttp JSON handler", f"http://{HOST}:{bare_port}/"),
        ("GET /products/{id} cached", f"http://{HOST}:{servers['cached'][1]}{path}"),
        ("GET /products/{id} uncached", f"http://{HOST}:{servers['uncached'][1]}{path}"),
    ]
    return [
        await load(name, url, {}, duration=args.duration, connections=args.connections)
        for name, url in targets
    ]


def report(results: list[Result], args: argparse.Namespace) -> bool:
    """Print the table, the ratios and the notes; return whether the run had no errors."""
    print(f"\n{'target':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in results:
        print(
            f"{r.target:<32}{r.rps:>10.0f}{r.percentile(50):>9.2f}"
            f"{r.percentile(99):>9.2f}{r.errors:>8}"
        )
    bare, cached, uncached = results

    def ratio(a: Result, b: Result) -> float:
        return a.rps / b.rps if b.rps else float("nan")

    print(f"\nratio cached ÷ bare (req/s):     {ratio(cached, bare):.3f}   baseline: {BASELINE}")
    print(f"ratio uncached ÷ bare (req/s):   {ratio(uncached, bare):.3f}")
    print(f"ratio cached ÷ uncached (req/s): {ratio(cached, uncached):.3f}")
    print(
        f"catalog: {args.products} seeded products, one hot product asked for; cached = "
        "in-process tier hits (Redis/memcached behind them); uncached = one PostgreSQL query "
        "per request.\n"
        f"load generator: closed-loop aiohttp client in the benchmark process, {args.connections} "
        f"keep-alive connections, {args.duration:g} s per target after a discarded {WARMUP:g} s "
        f"warm-up; it shares the machine's {os.cpu_count()} cores with the server under test, "
        "so the figures are relative, not absolute capacity."
    )
    failed = [r for r in results if r.errors]
    for r in failed:
        print(f"ERRORS: {r.target}: {r.errors} failed requests (first: {r.first_error})")
    if failed:
        print("RESULT INVALID: the run had errors")
    return not failed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 only for a complete run without errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target")
    parser.add_argument("--connections", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--products", type=int, default=1000, help="products to seed")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.products < 1:
        parser.error("--duration must be > 0, --connections and --products >= 1")

    import uvloop

    import migrations
    from services.products.seed import seed

    run_id = uuid.uuid4().hex[:8]
    dsn, namespace = f"{PG}/bench_products_{run_id}", f"bench-{run_id}"
    ctx = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    budget = READY_TIMEOUT * 3 + 3 * (WARMUP + args.duration + REQUEST_TIMEOUT) + 30
    try:
        migrations.upgrade("products", dsn)
        asyncio.run(seed(dsn, products=args.products, categories=40, random_seed=1))
        product_id = asyncio.run(hot_product(dsn))
        servers: dict[str, tuple[BaseProcess, int]] = {}
        port = free_port()
        servers["bare"] = (ctx.Process(target=serve_bare, args=(port,), name="bare-server"), port)
        for name, cached in (("cached", True), ("uncached", False)):
            port = free_port()
            server = ctx.Process(
                target=serve_products,
                args=(port, dsn, f"{namespace}:{name}", cached),
                name=f"products-{name}",
            )
            servers[name] = (server, port)
        processes += [server for server, _ in servers.values()]
        for process in processes:
            process.start()
        results = uvloop.run(asyncio.wait_for(bench(servers, product_id, args), timeout=budget))
        return 0 if report(results, args) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 2
    finally:
        stop(processes)
        try:
            asyncio.run(cleanup_storage(dsn, namespace))
        except Exception as exc:
            print(f"cleanup failed, drop {dsn} by hand: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
