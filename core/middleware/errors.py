"""Every error becomes RFC 9457 problem+json; nothing internal leaks to the client.

- a ``ProblemError`` is its own status (``GatewayTimeout``, 504, when an upstream this service
  waits on does not answer in time: the code that knows raises it);
- a lost or refused connection to a dependency (``is_dependency_error``: PostgreSQL, Redis,
  RabbitMQ, memcached, or a socket the kernel refused or reset), a statement PostgreSQL
  cancelled at its ``statement_timeout``, or a pool that had no free connection in time is a
  503 with ``Retry-After``: the request may succeed later;
- anything else is a bug: a 500, its traceback logged once with the request's correlation id
  (never in the response). A ``FileNotFoundError`` or a bare ``TimeoutError`` is one: an
  ``OSError`` is not a dependency failure by itself.

Expected errors (4xx) log a warning, 5xx an error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomcache
import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.bus.transport import PublishError
from core.errors import ProblemError, ServiceUnavailable
from core.middleware.correlation import CORRELATION_ID

__all__ = [
    "DEPENDENCY_ERRORS",
    "error_middleware",
    "is_dependency_error",
    "problem_from",
    "problem_response",
]

log = logging.getLogger("core.errors")

PROBLEM_JSON = "application/problem+json"
_KEPT_HEADERS = frozenset({"allow", "location", "www-authenticate", "retry-after"})

# The connection errors of the dependencies (database, cache, broker): the request may succeed
# later. Exceptions of these types always are; ``is_dependency_error`` adds the few that only
# some instances of a broader type are.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    # The builtin family: refused, reset, aborted, broken pipe (what a dead socket raises).
    ConnectionError,
    # asyncpg: a lost connection (ConnectionDoesNotExistError...), a server starting up or full.
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # A statement PostgreSQL cancelled (``statement_timeout``, or an operator's cancel): the
    # database is slow or overloaded right now, not our bug.
    asyncpg.QueryCanceledError,
    RedisConnectionError,
    RedisTimeoutError,
    # The broker: aiormq's AMQPConnectionError is a ConnectionError (above); the bus raises
    # PublishError when the broker refused a message or is gone, PublishTimeout without confirm.
    PublishError,
)

# asyncpg's InterfaceError is mostly misuse (a bug); these messages are a closed pool/connection.
_ASYNCPG_CLOSED = ("pool is closing", "pool is closed", "connection is closed")


# The client libraries of the dependencies: an OSError (a timeout, an unknown or unreachable
# host) raised while one of them was working is the dependency failing, not our code.
_CLIENT_PACKAGES = frozenset({"asyncpg", "redis", "aiomcache", "aiormq", "pamqp"})


def _raised_inside_a_client(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.partition(".")[0] in _CLIENT_PACKAGES:
            return True
        tb = tb.tb_next
    return False


def is_dependency_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a dependency's connection failing (a 503), not a bug (a 500).

    By type for the connection errors of asyncpg, redis-py, aiormq (and the builtin
    ``ConnectionError`` family); by origin for any other ``OSError``, ``TimeoutError`` included:
    one raised inside a client library (a pool waiting for a connection, a host that does not
    resolve) is the dependency's, one raised by our own code is a bug.
    """
    if isinstance(exc, DEPENDENCY_ERRORS):
        return True
    if isinstance(exc, OSError) and _raised_inside_a_client(exc):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        message = str(exc)
        return any(closed in message for closed in _ASYNCPG_CLOSED)
    if isinstance(exc, aiomcache.ClientException):
        # aiomcache reports a connection the server closed as an unexpected empty answer
        # ("get failed: b''"); anything else it raises is about the call itself.
        return not isinstance(exc, aiomcache.ValidationException) and str(exc).endswith(": b''")
    return False


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
    except Exception as exc:
        correlation = {"correlation_id": request.get(CORRELATION_ID)}
        if is_dependency_error(exc):
            log.warning(
                "dependency failure on %s %s: %r",
                request.method,
                request.path,
                exc,
                extra=correlation,
            )
            return problem_from(
                request,
                ServiceUnavailable(
                    "A dependency of this service is unavailable; retry shortly",
                    headers={"Retry-After": "1"},
                ),
            )
        log.exception("unhandled error on %s %s", request.method, request.path, extra=correlation)
        return problem_response(
            request,
            status=500,
            title="Internal Server Error",
            detail="An unexpected error occurred; quote the correlation id when reporting it",
        )
    return response
