"""CORS for the origins listed in settings; passes through requests from other origins untouched."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

__all__ = ["cors_middleware"]

_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Correlation-ID"
_EXPOSE_HEADERS = (
    "X-Correlation-ID, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, Location"
)


def cors_middleware(*, origins: Collection[str], max_age: int = 600) -> Middleware:
    """Answer preflights and tag responses for ``origins`` (``"*"``: any, no credentials)."""
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not (any_origin or origin in allowed):
            passed = await handler(request)
            if allowed and not any_origin:
                # The answer differs by Origin: a cache must not serve it to another origin.
                passed.headers.add(hdrs.VARY, "Origin")
            return passed
        preflight = (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if preflight:
            response: web.StreamResponse = web.Response(status=204)
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST, PUT, PATCH, DELETE"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = _ALLOW_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(max_age)
        else:
            response = await handler(request)
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = _EXPOSE_HEADERS
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if any_origin else origin
        response.headers.add(hdrs.VARY, "Origin")
        return response

    return middleware
