"""Rejects a request whose declared body is over the limit before reading any of it (413).

Bodies without a ``Content-Length`` (chunked) are capped by the application's ``client_max_size``
while they are read.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from core.errors import PayloadTooLarge

__all__ = ["body_limit_middleware"]


def body_limit_middleware(*, max_bytes: int) -> Middleware:
    """A middleware refusing declared bodies larger than ``max_bytes``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(f"The request body exceeds {max_bytes} bytes")
        return await handler(request)

    return middleware
