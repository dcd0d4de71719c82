"""One structured access line per request: method, route template, status, duration, correlation.

Probes (``/healthz``, ``/readyz``, ``/metrics``: load balancers, orchestrators, the gateway's
health checks and scrapers call them every few seconds) are logged at DEBUG, everything else at
INFO: an idle system stays quiet.

The line is written straight to the output ``configure_logging`` installed when nothing else would
see its record (``core.logging.direct_output``): a ``LogRecord`` and the handler's formatting
cost more than the rest of a cached read. Otherwise (a test's log capture, a handler added on
``core.access``) it is an ordinary record with the same fields.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from core.logging import direct_output
from core.middleware.correlation import CORRELATION_ID

__all__ = ["PROBE_PATHS", "access_log_middleware", "route_template"]

log = logging.getLogger("core.access")

# The operational routes of ``core.app``: liveness, readiness, metrics.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(request: web.Request) -> str:
    """The matched route's template (``/users/{id}``), never the raw path, to bound cardinality."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "<unmatched>"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log the request when its response is ready."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and other statuses raised, not returned
        status = exc.status
        raise
    finally:
        # Probes that pass are routine; a failing one (a 503 /readyz) is news.
        probe = status < 400 and request.path in PROBE_PATHS
        level = logging.DEBUG if probe else logging.INFO
        direct = direct_output(log, level)
        if direct is not None or log.isEnabledFor(level):
            method = request.method
            path = route_template(request)
            correlation = request.get(CORRELATION_ID)
            fields = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                "correlation_id": correlation,
                "remote": request.remote,
            }
            if direct is not None:
                del fields["correlation_id"]  # a field of every line, in its place
                direct.write(log.name, level, f"{method} {path} {status}", correlation, fields)
            else:
                log.log(level, "%s %s %s", method, path, status, extra=fields)
