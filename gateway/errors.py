"""The gateway's own errors: a broken, slow or missing upstream, as problem+json (never a host)."""

from __future__ import annotations

from core.errors import ProblemError, ServiceUnavailable

__all__ = ["BadGateway", "GatewayTimeout", "NoHealthyInstance", "UpstreamOverloaded"]


class BadGateway(ProblemError):
    """The upstream broke the exchange: reset, closed early, or answered something not HTTP."""

    status = 502
    title = "Bad Gateway"


class GatewayTimeout(ProblemError):
    """The upstream did not answer within the gateway's timeout."""

    status = 504
    title = "Gateway Timeout"


class NoHealthyInstance(ServiceUnavailable):
    """No instance of the upstream is up (or every one refused the connection)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(
            f"No healthy instance of the {upstream} service is available; retry shortly",
            headers={"Retry-After": "1"},
        )
        self.upstream = upstream


class UpstreamOverloaded(ServiceUnavailable):
    """The upstream has as many requests in flight as it may, and no place came free in time."""

    def __init__(self, upstream: str, *, retry_after: int) -> None:
        super().__init__(
            f"The {upstream} service is busy; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        self.upstream = upstream
