"""Running an application for real: uvloop, graceful shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

__all__ = ["run", "serve"]

log = logging.getLogger("core.runner")


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 10.0,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then drain and close every resource."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        url = f"http://{host}:{port}"
        log.info("serving on %s", url)
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def run(app: web.Application, *, host: str, port: int) -> None:
    """Serve ``app`` on uvloop (where available) until stopped."""
    if sys.platform != "win32":
        import uvloop

        uvloop.run(serve(app, host=host, port=port))
    else:  # pragma: no cover
        asyncio.run(serve(app, host=host, port=port))
