"""Every error becomes RFC 9457 problem+json; nothing internal leaks to the client.

Expected errors (4xx) log a warning, a failed dependency a 503 with ``Retry-After``, anything else
a 500 and its traceback in the log (never in the response).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ProblemError, ServiceUnavailable
from core.middleware.correlation import CORRELATION_ID

__all__ = ["DEPENDENCY_ERRORS", "error_middleware", "problem_from", "problem_response"]

log = logging.getLogger("core.errors")

PROBLEM_JSON = "application/problem+json"
_KEPT_HEADERS = frozenset({"allow", "location", "www-authenticate", "retry-after"})

# Failures of a dependency (database, cache, broker): the request may succeed later.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def problem_response(
    request: web.Request,
    *,
    status: int,
    title: str,
    detail: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """Build a problem+json response for ``request``."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.path,
        "correlation_id": request.get(CORRELATION_ID),
    }
    if extra:
        body.update(extra)
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


def problem_from(request: web.Request, exc: ProblemError) -> web.Response:
    """The problem+json response for ``exc``."""
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        type_=exc.type,
        headers=exc.headers,
        extra=exc.extra,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate exceptions into problem+json responses."""
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        raise
    except ProblemError as exc:
        level = logging.ERROR if exc.status >= 500 else logging.WARNING
        log.log(level, "%s %s -> %s: %s", request.method, request.path, exc.status, exc.detail)
        return problem_from(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
        detail = exc.reason
        if exc.status == 413:
            detail = "The request body is too large"
        return problem_response(
            request, status=exc.status, title=exc.reason, detail=detail, headers=headers
        )
    except asyncpg.DataError as exc:
        # Input the database refuses (out-of-range number, invalid text): the client's to fix.
        log.warning("database refused input on %s %s: %r", request.method, request.path, exc)
        return problem_response(
            request,
            status=400,
            title="Bad Request",
            detail="The request contains a value that cannot be stored",
        )
    except DEPENDENCY_ERRORS as exc:
        log.warning("dependency failure on %s %s: %r", request.method, request.path, exc)
        return problem_from(
            request,
            ServiceUnavailable(
                "A dependency of this service is unavailable; retry shortly",
                headers={"Retry-After": "1"},
            ),
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(
            request,
            status=500,
            title="Internal Server Error",
            detail="An unexpected error occurred; quote the correlation id when reporting it",
        )
    return response
