"""The error hierarchy of core: one base, the HTTP status as a class attribute.

Services raise these (or their own subclasses) from any layer; the error middleware turns them
into RFC 9457 problem details in one place. Nothing here depends on aiohttp.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GatewayTimeout",
    "NotFound",
    "PayloadTooLarge",
    "ProblemError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class ProblemError(Exception):
    """Base of every error that becomes a problem+json response.

    ``status`` and ``title`` are class attributes; ``detail`` is per instance and must never carry
    internals (SQL, hosts, stack traces): it is shown to the client.
    """

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    type: ClassVar[str] = "about:blank"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}


class BadRequest(ProblemError):
    """The request is malformed (for example, its body is not JSON)."""

    status = 400
    title = "Bad Request"


class Unauthorized(ProblemError):
    """Missing, invalid, expired or revoked credentials."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="aioshop"'})
        super().__init__(detail, **kwargs)


class Forbidden(ProblemError):
    """Authenticated, but not allowed."""

    status = 403
    title = "Forbidden"


class NotFound(ProblemError):
    """The resource does not exist (or is not visible to the caller)."""

    status = 404
    title = "Not Found"


class Conflict(ProblemError):
    """The request conflicts with the current state (duplicate, state machine violation)."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(ProblemError):
    """The request body exceeds the configured limit."""

    status = 413
    title = "Payload Too Large"


class UnsupportedMediaType(ProblemError):
    """The request body is not of a media type the route accepts."""

    status = 415
    title = "Unsupported Media Type"


class ValidationFailed(ProblemError):
    """Input failed validation; ``errors`` lists each failure as ``{loc, msg, type}``."""

    status = 422
    title = "Unprocessable Content"

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None) -> None:
        super().__init__(detail or "The request failed validation", extra={"errors": errors})
        self.errors = errors


class TooManyRequests(ProblemError):
    """A rate limit was exceeded."""

    status = 429
    title = "Too Many Requests"


class ServiceUnavailable(ProblemError):
    """A dependency is down; the client may retry later."""

    status = 503
    title = "Service Unavailable"


class GatewayTimeout(ProblemError):
    """An upstream this service waits on did not answer in time; the client may retry later."""

    status = 504
    title = "Gateway Timeout"
