"""Cost of one gateway hop: the same product read, directly on the upstream and through the gateway.

Run from the project root::

    .venv/bin/python -m perf.bench_gateway [--duration 10] [--connections 32] [--latency-duration 5]

Targets, each a separate (spawned) process on uvloop:

- a fake products upstream: a bare aiohttp handler returning a product-shaped JSON body, the
  ideal cached read (no I/O);
- the gateway (``gateway.run_gateway``) in front of it, rate limiting on (a limit too high to
  refuse anything: counted in memory, synced with Redis every ``RATE_LIMIT_SYNC_INTERVAL``) and
  edge auth on (the route is public, so no token);
- a second gateway with rate limiting off, to show what rate limiting costs;
- when ``services.products`` is importable and starts: the products service on a throw-away
  database, ``GET /api/v1/products/{id}`` of one product (served from its cache after the first
  read), directly and through a gateway.

Each target is loaded in turn by the closed-loop client of ``perf.bench_users_me``: first with
``--connections`` workers (throughput, p50/p99 under load), then with one connection (the latency
of a lone request: the added latency per hop is the gateway's p50 minus the direct p50 there).
Then (``--paced-duration``, 0 to skip) each read at a paced rate, half of what the gateway
reached under load, straight and through the gateway in alternation: ``added_latency``, which a
table runner can call on its own with any service and gateway URLs.
Only 127.0.0.1 is contacted; the run's database and Redis keys are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

import aiohttp
from aiohttp import web

from perf.bench_users_me import (
    HOST,
    PG,
    READY_TIMEOUT,
    REDIS_URL,
    REQUEST_TIMEOUT,
    WARMUP,
    Result,
    free_port,
    load,
    stop,
    wait_ready,
)

PRODUCT_ID = "0b6a1f4e-5c3d-4e2f-9a8b-7c6d5e4f3a21"
PRODUCT = {  # the shape and size of a product in API.md
    "id": PRODUCT_ID,
    "sku": "BENCH-0001",
    "name": "Bench Product",
    "description": "A product read over and over by the gateway benchmark.",
    "price_cents": 1999,
    "currency": "USD",
    "category_id": None,
    "attributes": {"colour": "blue", "size": "M"},
    "stock": 42,
    "created_at": "2025-01-01T12:00:00.000000Z",
    "updated_at": "2025-01-01T12:00:00.000000Z",
}
CLOSED = "http://127.0.0.1:1"


def serve_fake_products(port: int) -> None:
    """Process target: a bare aiohttp app answering ``GET /api/v1/products/{id}`` from memory."""
    from core.runner import run

    async def product(request: web.Request) -> web.Response:
        return web.json_response(PRODUCT)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/api/v1/products/{product_id}", product)
    app.router.add_get("/readyz", ready)
    run(app, host=HOST, port=port)


def serve_gateway_process(port: int, products: str, namespace: str, rate_limit: bool) -> None:
    """Process target: the gateway in front of ``products``."""
    from core.logging import configure_logging
    from gateway import Settings, run_gateway

    settings = Settings(
        env="test",
        host=HOST,
        port=port,
        upstream_users=CLOSED,
        upstream_products=products,
        upstream_orders=CLOSED,
        upstream_web=CLOSED,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        rate_limit_enabled=rate_limit,
        rate_limit_default="999999999/60",
        log_level="WARNING",
        log_format="text",
    )
    configure_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    run_gateway(settings)


def serve_products(port: int, dsn: str, namespace: str) -> None:
    """Process target: the products service (cache on) against database ``dsn``."""
    from core.logging import configure_logging
    from core.runner import run

    # Looked up at run time: the benchmark must load (and type-check) without the service.
    products = importlib.import_module("services.products")
    settings = products.Settings(
        env="test",
        database_url=dsn,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        bus_transport="memory",
        bus_queue=f"{namespace}.products",
        log_level="WARNING",
        log_format="text",
    )
    configure_logging("products", level=settings.log_level, fmt=settings.log_format)
    run(products.create_products_app(settings), host=HOST, port=port)


@dataclass
class Server:
    """A spawned server and where it answers."""

    name: str
    process: BaseProcess
    base: str


def start(
    ctx: multiprocessing.context.SpawnContext,
    name: str,
    target: Callable[..., None],
    *args: object,
) -> Server:
    """Spawn ``target(port, *args)`` as process ``name`` on a free port."""
    port = free_port()
    process = ctx.Process(target=target, args=(port, *args), name=name)
    process.start()
    return Server(name, process, f"http://{HOST}:{port}")


async def create_product(base: str) -> str:
    """Create one product through the products service (an admin token signed with the dev key)."""
    from core import BaseServiceSettings, token_codec

    signer = token_codec(BaseServiceSettings(env="test"), signing=True)
    token = signer.issue("access", user_id=str(uuid.uuid4()), roles=["admin"], family="bench")
    body = {k: PRODUCT[k] for k in ("name", "description", "price_cents", "attributes", "stock")}
    body["sku"] = f"BENCH-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token.token}"}
    url, timeout = f"{base}/api/v1/products", aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        if resp.status != 201:
            raise RuntimeError(f"create product: HTTP {resp.status}: {await resp.text()}")
        product_id: str = (await resp.json())["id"]
        return product_id


@dataclass
class Pair:
    """One read measured directly and through a gateway, under load and alone."""

    label: str
    direct: list[Result]
    through: list[list[Result]]  # per gateway variant: [loaded, alone]
    variants: list[str]
    urls: list[str]  # the direct URL, then each variant's


async def measure(
    label: str, direct_url: str, gateway_urls: list[tuple[str, str]], args: argparse.Namespace
) -> Pair:
    """Load the direct URL and each gateway URL, under load and with one connection."""

    async def both(name: str, url: str) -> list[Result]:
        loaded = await load(name, url, {}, duration=args.duration, connections=args.connections)
        alone = await load(
            f"{name} (1 conn)", url, {}, duration=args.latency_duration, connections=1
        )
        return [loaded, alone]

    direct = await both(f"{label} direct", direct_url)
    through = [await both(f"{label} via {variant}", url) for variant, url in gateway_urls]
    variants = [variant for variant, _ in gateway_urls]
    return Pair(label, direct, through, variants, [direct_url, *(url for _, url in gateway_urls)])


async def paced(
    target: str, url: str, *, rate: float, duration: float, connections: int = 64
) -> Result:
    """Open loop: request ``i`` is due ``i / rate`` s after the start whatever the others do, its
    latency counted from then (no coordinated omission; waiting for one of the ``connections``
    counts too), after a ``WARMUP`` not measured."""
    result = Result(target, duration)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, due: float, measured: bool) -> None:
        try:
            async with session.get(url) as response:
                await response.read()
                ok, problem = response.status == 200, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, problem = False, repr(exc)
        if not ok:
            result.errors += 1
            result.first_error = result.first_error or problem
        elif measured:
            result.latencies.append(time.perf_counter() - due)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        total = int((WARMUP + duration) * rate)
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(session, due, i >= WARMUP * rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return result


@dataclass
class AddedLatency:
    """The same read at the same paced rate, straight from the service and through a gateway."""

    rate: float
    direct: Result
    through: Result

    def added(self, q: float) -> float:
        """What the gateway adds to percentile ``q`` (0-100), in ms."""
        return self.through.percentile(q) - self.direct.percentile(q)


async def added_latency(
    service_url: str,
    gateway_url: str,
    *,
    rate: float | None = None,
    duration: float = 5.0,
    rounds: int = 2,
    connections: int = 32,
) -> AddedLatency:
    """The latency the gateway adds to ``GET service_url`` (the resource of ``gateway_url``) at
    ``rate`` req/s, by default half the gateway's saturation rate (``connections`` closed-loop
    workers for ``duration`` s). Both are loaded in turn, ``rounds`` times for ``duration`` s, so
    that load from elsewhere falls on both alike; latencies are pooled per side."""
    if rate is None:
        saturated = await load(
            "saturation", gateway_url, {}, duration=duration, connections=connections
        )
        if saturated.errors or not saturated.latencies:
            raise RuntimeError(f"gateway failed under load: {saturated.first_error}")
        rate = saturated.rps / 2
    runs: dict[str, list[Result]] = {service_url: [], gateway_url: []}
    for _ in range(rounds):
        for url, done in runs.items():
            done.append(await paced(url, url, rate=rate, duration=duration))
    direct, through = (
        Result(side, duration * rounds, [x for r in done for x in r.latencies],
               sum(r.errors for r in done), next((r.first_error for r in done if r.errors), ""))
        for side, done in zip(("direct", "gateway"), runs.values(), strict=True)
    )  # fmt: skip
    return AddedLatency(rate, direct, through)


async def bench(
    servers: dict[str, Server], products: Server | None, args: argparse.Namespace
) -> list[Pair]:
    """Wait for every server, then measure the fake read and, if present, the products read."""
    for server in servers.values():
        await wait_ready(f"{server.base}/readyz", server.process)
    pairs = []
    path = f"/api/v1/products/{PRODUCT_ID}"
    for name in ("gateway", "gateway-nolimit"):  # its first health check may predate the fake
        await wait_ready(servers[name].base + path, servers[name].process)
    pairs.append(
        await measure(
            "fake product",
            servers["fake"].base + path,
            [
                ("gateway", servers["gateway"].base + path),
                ("gateway, no rate limit", servers["gateway-nolimit"].base + path),
            ],
            args,
        )
    )
    if products is not None:
        product_path = f"/api/v1/products/{await create_product(products.base)}"
        gateway = servers["gateway-products"]
        await wait_ready(gateway.base + product_path, gateway.process)
        pairs.append(
            await measure(
                "products service",
                products.base + product_path,
                [("gateway", servers["gateway-products"].base + product_path)],
                args,
            )
        )
    return pairs


async def report_paced(pairs: list[Pair], args: argparse.Namespace) -> bool:
    """Print ``added_latency`` of each read's first gateway at half the rate it reached under
    load; return whether it had no errors."""
    print("\nat a paced rate, half of the gateway's under load (open loop, alternating):")
    print(f"{'read':<44}{'req/s':>8}{'direct p50':>12}{'p99':>8}{'gw p50':>9}{'p99':>8}"
          f"{'+p50':>8}{'+p99':>8}")  # fmt: skip
    ok = True
    for pair in pairs:
        rate = pair.through[0][0].rps / 2
        a = await added_latency(pair.urls[0], pair.urls[1], rate=rate, duration=args.paced_duration)
        print(
            f"{pair.label + ' via ' + pair.variants[0]:<44}{a.rate:>8.0f}"
            f"{a.direct.percentile(50):>12.2f}{a.direct.percentile(99):>8.2f}"
            f"{a.through.percentile(50):>9.2f}{a.through.percentile(99):>8.2f}"
            f"{a.added(50):>8.2f}{a.added(99):>8.2f}"
        )
        for r in (r for r in (a.direct, a.through) if r.errors):
            ok = False
            print(f"ERRORS (paced): {r.target}: {r.errors} (first: {r.first_error})")
    return ok


def report(pairs: list[Pair], args: argparse.Namespace) -> bool:
    """Print the tables and the added latency per hop; return whether the run had no errors."""
    results: list[Result] = []
    print(f"\n{'target':<52}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for pair in pairs:
        for r in [*pair.direct, *(r for group in pair.through for r in group)]:
            results.append(r)
            print(
                f"{r.target:<52}{r.rps:>10.0f}{r.percentile(50):>9.2f}{r.percentile(99):>9.2f}{r.errors:>8}"
            )
    print("\nadded by one gateway hop (gateway minus direct):")
    print(
        f"{'read':<44}{'load p50':>10}{'load p99':>10}{'alone p50':>11}{'alone p99':>11}"
        f"{'req/s ratio':>13}"
    )
    for pair in pairs:
        (d_load, d_alone) = pair.direct
        for variant, (g_load, g_alone) in zip(pair.variants, pair.through, strict=True):
            ratio = g_load.rps / d_load.rps if d_load.rps else float("nan")
            print(
                f"{pair.label + ' via ' + variant:<44}"
                f"{g_load.percentile(50) - d_load.percentile(50):>10.2f}"
                f"{g_load.percentile(99) - d_load.percentile(99):>10.2f}"
                f"{g_alone.percentile(50) - d_alone.percentile(50):>11.2f}"
                f"{g_alone.percentile(99) - d_alone.percentile(99):>11.2f}"
                f"{ratio:>13.3f}"
            )
    print(
        f"\n(ms; 'load': {args.connections} keep-alive connections for {args.duration:g} s, "
        f"'alone': 1 connection for {args.latency_duration:g} s, each after a discarded "
        f"{WARMUP:g} s warm-up.) Baseline: the same read without the gateway, in the same run. "
        f"The load generator shares the machine's {os.cpu_count()} cores with the upstream and "
        "the gateway, so under load the gateway's CPU competes with both: the 'alone' column is "
        "the latency one hop adds (Kong and Envoy quote about 1 ms)."
    )
    failed = [r for r in results if r.errors]
    for r in failed:
        print(f"ERRORS: {r.target}: {r.errors} failed requests (first: {r.first_error})")
    if failed:
        print("RESULT INVALID: the run had errors")
    return not failed


async def cleanup_storage(dsn: str | None, namespace: str) -> None:
    """Drop the products database (if one was made) and delete the run's Redis keys."""
    from redis.asyncio import Redis

    from core.migrate import drop_database

    if dsn is not None:
        await drop_database(dsn)
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _products_available() -> str | None:
    """Why the products service cannot be benchmarked, or ``None`` if it can."""
    if importlib.util.find_spec("services.products") is None:
        return "services.products does not exist yet"
    try:
        import migrations

        importlib.import_module("services.products").create_products_app  # noqa: B018
        migrations.location("products")
    except Exception as exc:
        return f"services.products cannot be loaded: {exc!r}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 only for a complete run without errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per loaded target")
    parser.add_argument("--connections", type=int, default=32, help="concurrent client workers")
    parser.add_argument(
        "--latency-duration", type=float, default=5.0, help="seconds per one-connection target"
    )
    parser.add_argument(
        "--paced-duration", type=float, default=5.0, help="seconds per paced run (0: none)"
    )
    parser.add_argument("--no-products", action="store_true", help="skip the products service")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.latency_duration <= 0 or args.connections < 1:
        parser.error("durations must be > 0 and --connections >= 1")
    if args.paced_duration < 0:
        parser.error("--paced-duration must be >= 0")

    import uvloop

    run_id = uuid.uuid4().hex[:8]
    namespace = f"bench-gw-{run_id}"
    ctx = multiprocessing.get_context("spawn")
    servers: dict[str, Server] = {}
    products: Server | None = None
    dsn: str | None = None
    skipped = "--no-products" if args.no_products else _products_available()
    try:
        fake = start(ctx, "fake", serve_fake_products)
        servers["fake"] = fake
        servers["gateway"] = start(
            ctx, "gateway", serve_gateway_process, fake.base, namespace, True
        )
        servers["gateway-nolimit"] = start(
            ctx, "gateway-nolimit", serve_gateway_process, fake.base, namespace, False
        )
        if skipped is None:
            import migrations

            dsn = f"{PG}/bench_products_{run_id}"
            migrations.upgrade("products", dsn)
            products = start(ctx, "products", serve_products, dsn, namespace)
            servers["products"] = products
            servers["gateway-products"] = start(
                ctx, "gateway-products", serve_gateway_process, products.base, namespace, True
            )
        targets = 3 + (2 if products else 0)
        budget = READY_TIMEOUT * 3 + targets * 2 * (
            WARMUP * 2 + args.duration + args.latency_duration + REQUEST_TIMEOUT
        )
        started = time.monotonic()
        budget += targets * 2 * (2 * args.paced_duration + 2 * WARMUP + REQUEST_TIMEOUT)
        pairs = uvloop.run(asyncio.wait_for(bench(servers, products, args), timeout=budget))
        ok = report(pairs, args)
        if args.paced_duration > 0:
            paced_ok = uvloop.run(asyncio.wait_for(report_paced(pairs, args), timeout=budget))
            ok = paced_ok and ok
        if skipped is not None:
            print(f"products service not measured: {skipped}")
        print(f"(run took {time.monotonic() - started:.0f} s)")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 2
    finally:
        stop([server.process for server in servers.values()])
        try:
            asyncio.run(cleanup_storage(dsn, namespace))
        except Exception as exc:
            print(f"cleanup failed, drop {dsn} by hand: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
