"""Serving the gateway, optionally over HTTPS, with HSTS on secure responses."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["hsts_hook", "serve_gateway", "ssl_context"]

log = logging.getLogger("gateway.server")


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server context for ``certfile``/``keyfile``: TLS 1.2 or later, the library's defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def hsts_hook(max_age: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``on_response_prepare``: ``Strict-Transport-Security`` on responses sent over TLS."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if max_age > 0 and request.secure:
            response.headers["Strict-Transport-Security"] = f"max-age={max_age}; includeSubDomains"

    return hook


async def serve_gateway(
    app: web.Application,
    *,
    host: str,
    port: int,
    context: ssl.SSLContext | None = None,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 10.0,
) -> None:
    """Serve ``app`` (over TLS with ``context``) until SIGINT/SIGTERM, then drain and close.

    ``core.runner.serve`` without TLS; it takes no SSL context, hence this twin.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
        await site.start()
        url = f"{'https' if context else 'http'}://{host}:{port}"
        log.info("gateway serving on %s", url)
        if ready is not None:
            ready(url)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
