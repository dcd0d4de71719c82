"""Correlation id: taken from ``X-Correlation-ID`` when valid, else new; echoed on the response."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from core.context import correlation_id, new_correlation_id, valid_correlation_id

__all__ = ["CORRELATION_HEADER", "CORRELATION_ID", "correlation_middleware"]

CORRELATION_HEADER = "X-Correlation-ID"
CORRELATION_ID = web.RequestKey("correlation_id", str)


@web.middleware
async def correlation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's correlation id to the context for logs, outbound calls and events."""
    incoming = request.headers.get(CORRELATION_HEADER)
    value = (
        incoming
        if incoming is not None and valid_correlation_id(incoming)
        else new_correlation_id()
    )
    request[CORRELATION_ID] = value
    token = correlation_id.set(value)
    try:
        return await handler(request)
    finally:
        # aiohttp serves keep-alive requests in one task: the id must not leak into the next one.
        correlation_id.reset(token)
