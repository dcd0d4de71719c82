"""Request metrics: count and latency by route template and status, and requests in flight.

A long-lived response (a WebSocket, a ``text/event-stream``) is counted as a request but timed
in its own histogram: minutes of an open stream are not a slow request, and would otherwise
drown the latency percentiles of the dashboard and of Prometheus."""

from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from core.metrics import METRICS
from core.middleware.access_log import route_template

__all__ = ["metrics_middleware"]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe every request in the application's ``Metrics``."""
    metrics = request.app[METRICS]
    start = time.perf_counter()
    status = 500
    stream = _asks_for_a_stream(request)
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        status = response.status
        stream = stream or _is_a_stream(response)
        return response
    except web.HTTPException as exc:  # redirects and other statuses raised, not returned
        status = exc.status
        raise
    finally:
        metrics.in_flight.dec()
        observe = metrics.observe_stream if stream else metrics.observe_request
        observe(request.method, route_template(request), status, time.perf_counter() - start)


def _asks_for_a_stream(request: web.Request) -> bool:
    # Known before the handler runs, so that a stream that ends in an error is still one.
    return request.headers.get(
        hdrs.UPGRADE, ""
    ).lower() == "websocket" or "text/event-stream" in request.headers.get(hdrs.ACCEPT, "")


def _is_a_stream(response: web.StreamResponse) -> bool:
    # The header itself: the ``content_type`` property parses it anew on every read.
    media = response.headers.get(hdrs.CONTENT_TYPE)
    if media is not None and media.partition(";")[0].strip().lower() == "text/event-stream":
        return True
    return isinstance(response, web.WebSocketResponse)
