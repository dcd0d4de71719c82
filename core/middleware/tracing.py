"""A server span per request, continuing the W3C trace context of the caller.

Installed by ``core.app.create_app`` only while tracing is on (``core.tracing``): off, there is
no middleware at all, hence no cost. It sits right under the correlation id, so that the access
log line, and every line logged while the request is handled, carries the span's trace id.

An incoming ``traceparent``/``tracestate`` (the gateway's, another service's, a client's) makes
the span its child; a malformed one is ignored and the span starts a new trace. The span is
named after the route template (``POST /api/v1/orders``), never the raw path, and records the
status; a 5xx marks it failed.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry.trace import SpanKind

from core import tracing
from core.middleware.access_log import route_template

__all__ = ["tracing_middleware", "tracing_middlewares"]


def tracing_middlewares(service: str) -> Sequence[Middleware]:
    """``[tracing_middleware(service)]`` when tracing is on in this process (configured from the
    environment on the first call, see ``core.tracing.configure``), else nothing."""
    if not tracing.configure(service):
        return ()
    return (tracing_middleware(service),)


def tracing_middleware(service: str) -> Middleware:
    """The middleware of app ``service``: a server span around each request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracer = tracing.tracer()
        if tracer is None:  # turned off since the app was built (a test's provider is gone)
            return await handler(request)
        route = route_template(request)
        attributes = {
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "server.address": request.host,
            tracing.SERVICE_ATTRIBUTE: service,
        }
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=tracing.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # redirects and statuses raised, not returned
                tracing.record_status(span, exc.status)
                raise
            except Exception as exc:  # what no inner middleware answered: a 500 for aiohttp
                span.record_exception(exc)
                tracing.record_status(span, 500)
                raise
            tracing.record_status(span, response.status)
            return response

    return middleware
