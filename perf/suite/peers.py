"""``python -m perf.suite.peers aiohttp|fastapi --port N``: the peers of the benchmark table.

Both answer ``GET /`` with the same product-shaped JSON body as the products service's cached
read, with no middleware and no access log: the ceiling of the stack (a bare aiohttp handler on
uvloop) and what users pick instead (a bare FastAPI app on uvicorn, uvloop and httptools).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from perf.bench_products import PRODUCT

__all__ = ["PEERS", "main"]

HOST = "127.0.0.1"
PEERS = ("aiohttp", "fastapi")


def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    from core.runner import run

    async def product(request: web.Request) -> web.Response:
        return web.json_response(PRODUCT)

    app = web.Application()
    app.router.add_get("/", product)
    run(app, host=HOST, port=port)


def _serve_fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")  # type: ignore[untyped-decorator, unused-ignore]  # (FastAPI: bench extra)
    async def product() -> dict[str, Any]:
        return PRODUCT

    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the named peer until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m perf.suite.peers")
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    (_serve_aiohttp if args.peer == "aiohttp" else _serve_fastapi)(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
