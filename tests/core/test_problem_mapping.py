"""core.middleware.errors without a server: which exceptions are a dependency's failure, and the
problem+json each exception becomes, the middleware called directly on a mocked request
(``tests/core/middleware/test_errors.py`` runs the same mapping through real apps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import aiomcache
import aiormq
import asyncpg
import orjson
import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from core.middleware.correlation import CORRELATION_ID
from core.middleware.errors import error_middleware, is_dependency_error, problem_from

pytestmark = pytest.mark.unit

SECRET = "password=hunter2 host=10.20.30.40"


class OutOfStock(Conflict):
    title = "Out of stock"
    type = "https://aioshop.example/problems/out-of-stock"


def _request(path: str = "/things/1", correlation_id: str | None = "corr-7") -> web.Request:
    request = make_mocked_request("GET", path)
    if correlation_id is not None:
        request[CORRELATION_ID] = correlation_id
    return request


async def _through_middleware(
    exc: BaseException, *, request: web.Request | None = None
) -> web.Response:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    response = await error_middleware(request or _request(), handler)
    assert isinstance(response, web.Response)
    return response


def _body(response: web.Response) -> dict[str, Any]:
    assert response.content_type == "application/problem+json"
    assert isinstance(response.body, bytes)
    body: dict[str, Any] = orjson.loads(response.body)
    return body


# dependency errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_exc",
    [
        pytest.param(lambda: ConnectionRefusedError(111, SECRET), id="refused"),
        pytest.param(lambda: ConnectionAbortedError(103, SECRET), id="aborted"),
        pytest.param(lambda: ConnectionError(SECRET), id="connection-error"),
        pytest.param(lambda: asyncpg.PostgresConnectionError(SECRET), id="asyncpg-connection"),
        pytest.param(lambda: asyncpg.InterfaceError("pool is closing"), id="asyncpg-closing"),
        pytest.param(lambda: redis.exceptions.ConnectionError(SECRET), id="redis-connection"),
        pytest.param(lambda: redis.exceptions.TimeoutError(SECRET), id="redis-timeout"),
        pytest.param(lambda: aiormq.exceptions.AMQPConnectionError(SECRET), id="amqp"),
        pytest.param(lambda: aiomcache.ClientException("set failed", b""), id="memcached-lost"),
    ],
)
def test_connection_failures_of_dependencies_are_dependency_errors(
    make_exc: Callable[[], BaseException],
) -> None:
    assert is_dependency_error(make_exc())


@pytest.mark.parametrize(
    "make_exc",
    [
        pytest.param(lambda: RuntimeError(SECRET), id="runtime"),
        pytest.param(lambda: TimeoutError(), id="bare-timeout"),
        pytest.param(lambda: OSError(5, SECRET), id="os-error"),
        pytest.param(lambda: FileNotFoundError(2, SECRET), id="missing-file"),
        pytest.param(lambda: PermissionError(13, SECRET), id="permission"),
        pytest.param(lambda: ValueError(SECRET), id="value"),
        pytest.param(
            lambda: asyncpg.InterfaceError(
                "cannot perform operation: another operation is in progress"
            ),
            id="asyncpg-misuse",
        ),
        pytest.param(lambda: asyncpg.DataError(SECRET), id="asyncpg-data"),
        pytest.param(lambda: asyncpg.UniqueViolationError(SECRET), id="asyncpg-unique"),
        pytest.param(
            lambda: aiomcache.ClientException("get failed", b"SERVER_ERROR out of memory"),
            id="memcached-answer",
        ),
        pytest.param(lambda: aiomcache.ClientException("get failed"), id="memcached-no-item"),
        pytest.param(lambda: aiomcache.ValidationException("bad key", b""), id="memcached-key"),
        pytest.param(lambda: redis.exceptions.ResponseError(SECRET), id="redis-response"),
        pytest.param(lambda: ServiceUnavailable(), id="problem-503"),
    ],
)
def test_other_errors_are_not_dependency_errors(make_exc: Callable[[], BaseException]) -> None:
    assert not is_dependency_error(make_exc())


# the problem errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "title"),
    [
        (ProblemError, 500, "Internal Server Error"),
        (BadRequest, 400, "Bad Request"),
        (Unauthorized, 401, "Unauthorized"),
        (Forbidden, 403, "Forbidden"),
        (NotFound, 404, "Not Found"),
        (Conflict, 409, "Conflict"),
        (PayloadTooLarge, 413, "Payload Too Large"),
        (UnsupportedMediaType, 415, "Unsupported Media Type"),
        (TooManyRequests, 429, "Too Many Requests"),
        (ServiceUnavailable, 503, "Service Unavailable"),
        (GatewayTimeout, 504, "Gateway Timeout"),
    ],
)
async def test_each_problem_class_is_its_status_and_title(
    cls: type[ProblemError], status: int, title: str
) -> None:
    response = await _through_middleware(cls())

    assert response.status == status
    assert _body(response) == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": title,  # no detail given: the title
        "instance": "/things/1",
        "correlation_id": "corr-7",
    }


def test_unauthorized_asks_for_a_bearer_token_unless_told_otherwise() -> None:
    assert Unauthorized().headers == {"WWW-Authenticate": 'Bearer realm="aioshop"'}
    assert Unauthorized("expired", headers={"X-Why": "1"}).headers == {"X-Why": "1"}
    assert str(Unauthorized("expired")) == "expired"


async def test_a_subclass_keeps_its_type_detail_headers_and_extra() -> None:
    exc = OutOfStock(
        "Only 2 left", headers={"Retry-After": "30"}, extra={"product_ids": ["p1"], "left": 2}
    )

    response = await _through_middleware(exc, request=_request("/api/v1/orders", None))

    assert response.status == 409
    assert response.headers["Retry-After"] == "30"
    assert _body(response) == {
        "type": "https://aioshop.example/problems/out-of-stock",
        "title": "Out of stock",
        "status": 409,
        "detail": "Only 2 left",
        "instance": "/api/v1/orders",
        "correlation_id": None,
        "product_ids": ["p1"],
        "left": 2,
    }


def test_validation_failed_lists_its_errors() -> None:
    errors = [{"loc": ["body", "quantity"], "msg": "must be positive", "type": "greater_than"}]

    response = problem_from(_request(), ValidationFailed(errors))

    assert response.status == 422
    body = _body(response)
    assert (body["title"], body["detail"]) == (
        "Unprocessable Content",
        "The request failed validation",
    )
    assert body["errors"] == errors


async def test_a_problem_logs_a_warning_below_500_and_an_error_from_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="core.errors"):
        await _through_middleware(NotFound("No such thing"))
        await _through_middleware(GatewayTimeout("upstream slow"))

    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "core.errors"] == [
        (logging.WARNING, "GET /things/1 -> 404: No such thing"),
        (logging.ERROR, "GET /things/1 -> 504: upstream slow"),
    ]
    assert all(r.exc_info is None for r in caplog.records)


# other exceptions -------------------------------------------------------------------------------


async def test_a_dependency_error_is_a_503_to_retry_after_a_second() -> None:
    response = await _through_middleware(ConnectionResetError(104, SECRET))

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    body = _body(response)
    assert (body["title"], body["correlation_id"]) == ("Service Unavailable", "corr-7")
    assert body["detail"] == "A dependency of this service is unavailable; retry shortly"
    assert "hunter2" not in orjson.dumps(body).decode()


async def test_a_value_the_database_refuses_is_a_400() -> None:
    response = await _through_middleware(asyncpg.DataError(SECRET))

    assert response.status == 400
    body = _body(response)
    assert (body["title"], body["detail"]) == (
        "Bad Request",
        "The request contains a value that cannot be stored",
    )
    assert "hunter2" not in orjson.dumps(body).decode()


async def test_a_bug_is_a_500_that_leaks_nothing_and_logs_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="core.errors"):
        response = await _through_middleware(KeyError(SECRET))

    assert response.status == 500
    assert "Retry-After" not in response.headers
    body = _body(response)
    assert body["detail"] == (
        "An unexpected error occurred; quote the correlation id when reporting it"
    )
    assert "hunter2" not in orjson.dumps(body).decode()
    (record,) = [r for r in caplog.records if r.name == "core.errors"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    assert getattr(record, "correlation_id", None) == "corr-7"


@pytest.mark.parametrize(
    ("exc", "status", "title", "headers"),
    [
        (web.HTTPNotFound(), 404, "Not Found", {}),
        (
            web.HTTPMethodNotAllowed("DELETE", ["GET", "POST"]),
            405,
            "Method Not Allowed",
            {"Allow": "GET,POST"},
        ),
        (
            web.HTTPTooManyRequests(headers={"Retry-After": "9", "X-Internal": SECRET}),
            429,
            "Too Many Requests",
            {"Retry-After": "9"},
        ),
        (
            web.HTTPUnauthorized(headers={"WWW-Authenticate": "Basic"}),
            401,
            "Unauthorized",
            {"WWW-Authenticate": "Basic"},
        ),
    ],
)
async def test_aiohttp_http_errors_keep_only_their_protocol_headers(
    exc: web.HTTPException, status: int, title: str, headers: dict[str, str]
) -> None:
    response = await _through_middleware(exc)

    assert response.status == status
    body = _body(response)
    assert (body["title"], body["detail"], body["status"]) == (title, title, status)
    kept = {k: v for k, v in response.headers.items() if k not in ("Content-Type",)}
    assert kept == headers
    assert "X-Internal" not in response.headers


async def test_a_body_too_large_says_so() -> None:
    response = await _through_middleware(web.HTTPRequestEntityTooLarge(1024, 4096))

    assert response.status == 413
    assert _body(response)["detail"] == "The request body is too large"


@pytest.mark.parametrize(
    "exc",
    [web.HTTPFound("/elsewhere"), web.HTTPNotModified(), asyncio.CancelledError()],
    ids=["redirect", "not-modified", "cancelled"],
)
async def test_redirects_and_cancellation_pass_through(exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        await _through_middleware(exc)


async def test_a_response_passes_through_untouched() -> None:
    sent = web.json_response({"ok": True}, status=201)

    async def handler(request: web.Request) -> web.StreamResponse:
        return sent

    assert await error_middleware(_request(), handler) is sent


class Teapot(ProblemError):
    status: ClassVar[int] = 418
    title: ClassVar[str] = "I'm a teapot"


async def test_a_problem_of_an_uncommon_status_is_kept() -> None:
    response = await _through_middleware(Teapot())

    assert response.status == 418
    assert _body(response)["title"] == "I'm a teapot"
