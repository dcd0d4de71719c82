"""Serving the gateway, optionally over HTTPS, with HSTS on secure responses."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from core.runner import serve

__all__ = ["hsts_hook", "serve_gateway", "ssl_context"]


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

    ``core.runner.serve`` with the gateway's SSL context: the same slow-client timeouts.
    """
    await serve(
        app,
        host=host,
        port=port,
        ready=ready,
        shutdown_timeout=shutdown_timeout,
        ssl_context=context,
    )
