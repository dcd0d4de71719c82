"""The gateway's HTTPS policy: ``Strict-Transport-Security`` on the responses it sends over TLS.

Serving itself (TLS included: ``core.runner.server_ssl_context``) is ``core.runner``'s, as for
every server of the system; the gateway is the only one facing browsers, so HSTS is its policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["hsts_hook"]


def hsts_hook(max_age: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``on_response_prepare``: ``Strict-Transport-Security`` on responses sent over TLS."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if max_age > 0 and request.secure:
            response.headers["Strict-Transport-Security"] = f"max-age={max_age}; includeSubDomains"

    return hook
