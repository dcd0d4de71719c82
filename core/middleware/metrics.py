"""Request metrics: count and latency by route template and status, and requests in flight."""

from __future__ import annotations

import time

from aiohttp import web
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
    metrics.in_flight.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and other statuses raised, not returned
        status = exc.status
        raise
    finally:
        metrics.in_flight.dec()
        metrics.observe_request(
            request.method, route_template(request), status, time.perf_counter() - start
        )
