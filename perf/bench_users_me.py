"""Throughput and latency of ``GET /api/v1/users/me`` against a bare aiohttp JSON handler.

Run from the project root::

    .venv/bin/python -m perf.bench_users_me [--duration 10] [--connections 32]

Both servers run in their own (spawned) process on uvloop through ``core.runner.run``; the users
service talks to a throw-away PostgreSQL database, created, migrated and dropped by this run, and
to a Redis namespace of its own. One closed-loop aiohttp client in this process loads each server
in turn, for the same duration, after a discarded warm-up. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

import aiohttp
from aiohttp import web

HOST = "127.0.0.1"
PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
WARMUP = 1.0
REQUEST_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
BASELINE = "bare aiohttp JSON handler in the same run"
PROFILE = {  # the shape and size of a UserOut body
    "id": "3f0c8a4e-2b7d-4c61-9a0e-5d2f1b7c8e90",
    "email": "bench-3f0c8a4e@example.com",
    "full_name": "Bench User",
    "roles": ["customer"],
    "created_at": "2025-01-01T12:00:00.000000Z",
    "updated_at": "2025-01-01T12:00:00.000000Z",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def serve_bare(port: int) -> None:
    """Process target: a bare aiohttp app with one JSON handler, on uvloop."""
    from core.runner import run

    async def profile(request: web.Request) -> web.Response:
        return web.json_response(PROFILE)

    app = web.Application()
    app.router.add_get("/", profile)
    run(app, host=HOST, port=port)


def serve_users(port: int, dsn: str, namespace: str) -> None:
    """Process target: the users service on uvloop, against database ``dsn``."""
    from core.logging import configure_logging
    from core.runner import run
    from services.users.app import create_users_app
    from services.users.settings import Settings

    settings = Settings(
        env="test",
        database_url=dsn,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        bcrypt_rounds=4,
        log_level="WARNING",
        log_format="text",
    )
    configure_logging("users", level=settings.log_level, fmt=settings.log_format)
    run(create_users_app(settings), host=HOST, port=port)


@dataclass
class Result:
    """What one load run measured (latencies in seconds, measured window only)."""

    target: str
    duration: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile ``q`` (0-100) of the latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def rps(self) -> float:
        """Completed requests per second in the measured window."""
        return len(self.latencies) / self.duration


async def load(
    target: str, url: str, headers: dict[str, str], *, duration: float, connections: int
) -> Result:
    """Closed loop: ``connections`` workers GET ``url`` back to back for warm-up + ``duration``."""
    result = Result(target, duration)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    start = time.perf_counter()
    measure_from, end = start + WARMUP, start + WARMUP + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        while (t0 := time.perf_counter()) < end:
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, problem = False, repr(exc)
            t1 = time.perf_counter()
            if not ok:
                result.errors += 1
                result.first_error = result.first_error or problem
                await asyncio.sleep(0.01)  # do not spin on a refused connection
            elif measure_from <= t0 and t1 <= end:
                result.latencies.append(t1 - t0)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return result


async def wait_ready(url: str, process: BaseProcess) -> None:
    """Poll ``url`` until it answers 200; fail if ``process`` dies or it takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if not process.is_alive():
                raise RuntimeError(f"{process.name} exited with code {process.exitcode}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name} not ready at {url} after {READY_TIMEOUT:.0f} s")


async def login(base: str) -> str:
    """Register a fresh user on the users service and return an access token."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": "bench-pass-123"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        body = {**credentials, "full_name": "Bench User"}
        async with session.post(f"{base}/api/v1/auth/register", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"register: HTTP {response.status}: {await response.text()}")
        async with session.post(f"{base}/api/v1/auth/login", json=credentials) as response:
            if response.status != 200:
                raise RuntimeError(f"login: HTTP {response.status}: {await response.text()}")
            token: str = (await response.json())["access_token"]
            return token


async def bench(
    bare: BaseProcess, bare_port: int, users: BaseProcess, users_port: int, args: argparse.Namespace
) -> list[Result]:
    """Wait for both servers, log in, then load the bare app and ``/users/me`` in turn."""
    bare_url, users_base = f"http://{HOST}:{bare_port}/", f"http://{HOST}:{users_port}"
    await wait_ready(bare_url, bare)
    await wait_ready(f"{users_base}/readyz", users)
    auth = {"Authorization": f"Bearer {await login(users_base)}"}
    me_url = f"{users_base}/api/v1/users/me"
    targets = [("bare aiohttp JSON handler", bare_url, {}), ("GET /api/v1/users/me", me_url, auth)]
    return [
        await load(name, url, headers, duration=args.duration, connections=args.connections)
        for name, url, headers in targets
    ]


def report(results: list[Result], args: argparse.Namespace) -> bool:
    """Print the table, the ratio and the notes; return whether the run had no errors."""
    print(f"\n{'target':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in results:
        print(
            f"{r.target:<32}{r.rps:>10.0f}{r.percentile(50):>9.2f}{r.percentile(99):>9.2f}{r.errors:>8}"
        )
    bare, users = results
    ratio = users.rps / bare.rps if bare.rps else float("nan")
    print(f"\nratio users/me ÷ bare (req/s): {ratio:.3f}   baseline: {BASELINE}")
    print(
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


def stop(processes: list[BaseProcess]) -> None:
    """SIGTERM each server (graceful shutdown), then kill whatever is still alive."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=15)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


async def cleanup_storage(dsn: str, namespace: str) -> None:
    """Drop the throw-away database and delete the run's Redis keys."""
    from redis.asyncio import Redis

    from core.migrate import drop_database

    await drop_database(dsn)
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit code is 0 only for a complete run without errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per target")
    parser.add_argument("--connections", type=int, default=32, help="concurrent client workers")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be > 0 and --connections >= 1")

    import uvloop

    import migrations

    run_id = uuid.uuid4().hex[:8]
    dsn, namespace = f"{PG}/bench_users_{run_id}", f"bench-{run_id}"
    ctx = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    budget = READY_TIMEOUT * 2 + 2 * (WARMUP + args.duration + REQUEST_TIMEOUT) + 30
    try:
        migrations.upgrade("users", dsn)
        bare_port, users_port = free_port(), free_port()
        bare = ctx.Process(target=serve_bare, args=(bare_port,), name="bare-server")
        users = ctx.Process(
            target=serve_users, args=(users_port, dsn, namespace), name="users-server"
        )
        processes += [bare, users]
        for process in processes:
            process.start()
        results = uvloop.run(
            asyncio.wait_for(bench(bare, bare_port, users, users_port, args), timeout=budget)
        )
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
