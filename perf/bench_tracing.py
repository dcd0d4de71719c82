"""What tracing costs a request: a core app with tracing off and on, against a bare aiohttp app.

Run from the project root::

    .venv/bin/python -m perf.bench_tracing [--duration 8] [--connections 16]

Three servers, each in its own (spawned) process on uvloop through ``core.runner.run``, one
after the other: a bare aiohttp JSON handler (the baseline of this run), the same handler in an
app of ``core.create_app`` (every middleware, the access log written as JSON to /dev/null) with
tracing off, and that app with tracing on (an SDK provider whose batch processor hands every
span to an exporter that drops it: the cost of making spans, not of shipping them). One
closed-loop aiohttp client in this process loads each for the same duration after a discarded
warm-up, and the table gives each figure beside the baseline's. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess

import aiohttp
from aiohttp import web

from perf.bench_users_me import HOST, PROFILE, READY_TIMEOUT, Result, free_port, load, serve_bare

BASELINE = "bare aiohttp JSON handler in the same run"


def serve_core(port: int, traced: bool) -> None:
    """Process target: one JSON route in a core app; ``traced``: with an SDK provider whose
    exporter drops every span."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from core import create_app, tracing
    from core.logging import configure_logging
    from core.runner import run
    from core.settings import BaseServiceSettings

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if traced:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        tracing.install(provider)
    with open("/dev/null", "w") as sink:
        configure_logging("bench", level="INFO", fmt="json", stream=sink)
        settings = BaseServiceSettings(
            _env_file=None, env="test", bus_transport="memory", metrics_snapshot_interval=0
        )
        app = create_app("bench", settings)

        async def profile(request: web.Request) -> web.Response:
            return web.json_response(PROFILE)

        app.router.add_get("/profile", profile)
        run(app, host=HOST, port=port)


async def _ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)  # polling a server that is starting, with a deadline
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT} s")


def _measure(
    name: str, target: BaseProcess, url: str, *, duration: float, connections: int
) -> Result:
    target.start()
    try:
        asyncio.run(_ready(url))
        return asyncio.run(load(name, url, {}, duration=duration, connections=connections))
    finally:
        target.terminate()
        target.join(10)


def main(argv: list[str] | None = None) -> int:
    """Measure the three servers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per server")
    parser.add_argument("--connections", type=int, default=16, help="concurrent requests")
    args = parser.parse_args(argv)
    spawn = multiprocessing.get_context("spawn")
    runs: list[Result] = []
    for name, target_fn, path, extra in (
        ("bare aiohttp", serve_bare, "/", ()),
        ("core app, tracing off", serve_core, "/profile", (False,)),
        ("core app, tracing on", serve_core, "/profile", (True,)),
    ):
        port = free_port()
        process = spawn.Process(target=target_fn, args=(port, *extra), daemon=True)
        url = f"http://{HOST}:{port}{path}"
        runs.append(
            _measure(name, process, url, duration=args.duration, connections=args.connections)
        )
    base = runs[0]
    print(f"baseline: {BASELINE}; {args.connections} connections, {args.duration:g} s each")
    print(f"{'server':<24} {'req/s':>9} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for result in runs:
        print(
            f"{result.target:<24} {result.rps:>9.0f} {result.rps / base.rps:>7.2f} "
            f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f} {result.errors:>7}"
        )
    off, on = runs[1], runs[2]
    per_request = (1 / on.rps - 1 / off.rps) * 1e6  # the server is one thread: 1/rps each
    print(f"tracing on costs {per_request:.0f} µs of server time per request (from throughput)")
    return 1 if any(result.errors for result in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
