"""Running an application for real: uvloop, client timeouts, graceful shutdown on SIGINT/SIGTERM.

``serve`` is the one place every server starts (services, the dashboard and, with an SSL context,
the gateway): its connections keep the header-read, body-read and keep-alive timeouts of
``core.server`` (from the app's settings).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Callable

from aiohttp import web

from core.server import ServerTimeouts, app_runner

__all__ = ["run", "serve"]

log = logging.getLogger("core.runner")


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    timeouts: ServerTimeouts | None = None,
) -> None:
    """Serve ``app`` (over TLS with ``ssl_context``) until SIGINT or SIGTERM, then drain and
    close every resource. ``timeouts``: the clients' (default: from the app's settings)."""
    runner = app_runner(app, timeouts=timeouts, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
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
