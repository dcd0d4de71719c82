"""``python -m perf.suite.pyload URL``: the fallback load generator when wrk is not installed.

A closed loop of aiohttp clients on uvloop, in its own process, printing the same one-line JSON
as the wrk script of ``perf.suite.load``. It is slower than wrk (Python's client costs more CPU
than the servers it loads on a small machine), so rows measured with it say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

import aiohttp
import uvloop
from yarl import URL

from perf.suite.load import MARK

__all__ = ["main"]


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def _run(args: argparse.Namespace) -> dict[str, float]:
    headers = dict(h.split(": ", 1) for h in args.header)
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + args.seconds
    bodies = [b.encode() for b in args.bodies] or [args.body.encode() or None]
    base = URL(args.url)
    urls = [
        base.with_path(path.split("?")[0]).with_query(path.partition("?")[2]) for path in args.path
    ]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while (start := time.perf_counter()) < end:
            try:
                url = random.choice(urls) if urls else base
                body = random.choice(bodies)
                async with session.request(args.method, url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status >= 400:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append(time.perf_counter() - start)
            if args.delay_ms:
                await asyncio.sleep(args.delay_ms / 1000)

    began = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "us": (time.perf_counter() - began) * 1e6,
        "p50_us": _percentile(ordered, 50) * 1e6,
        "p99_us": _percentile(ordered, 99) * 1e6,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the URL, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m perf.suite.pyload")
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--path", action="append", default=[], help="pick one per request")
    parser.add_argument("--bodies", action="append", default=[], help="pick one per request")
    args = parser.parse_args(argv)
    figures = uvloop.run(_run(args))
    print(MARK + json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
