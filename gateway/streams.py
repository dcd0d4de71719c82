"""Admission of long-lived streams (the dashboard's event stream, WebSockets) at the gateway.

A stream holds a client connection and an upstream connection for minutes. Without limits, one
client opening hundreds of them locks every operator out of the dashboard. ``StreamLimiter``
counts the streams open in this gateway process and admits a new one only if

- its client (the user of a valid token, else the client IP) holds fewer than ``per_client``
  (else 429 ``Too Many Requests``);
- for a client without a token, anonymous streams hold fewer than ``anonymous_limit`` (a share
  of the total, so that anonymous floods cannot lock out authenticated users); for anyone but an
  operator (``metrics:read``), fewer than ``total - operator_reserve`` are open (anyone may
  register, so accounts alone must not take every place); and in all fewer than ``total`` (else
  503 ``Service Unavailable``).

Both refusals are problem+json with ``Retry-After``. Each admitted stream holds a ``StreamLease``
to release when it ends. The proxy also gives streams their own upstream session and a maximum
lifetime (see ``gateway.proxy``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from core.errors import ServiceUnavailable, TooManyRequests
from gateway.metrics import GatewayMetrics
from gateway.routing import RouteRule
from gateway.settings import Settings
from gateway.websocket import is_websocket

__all__ = ["StreamLease", "StreamLimiter", "StreamRoutes"]


class StreamRoutes:
    """Which requests are streams: the ``stream_routes`` rules, and every WebSocket."""

    def __init__(self, rules: list[str]) -> None:
        self.rule = RouteRule(rules)

    def matches(self, request: web.Request) -> bool:
        """Whether ``request`` opens a long-lived stream."""
        return is_websocket(request) or self.rule.matches(request.method, request.path)


@dataclass(eq=False)
class StreamLease:
    """One admitted stream; ``release`` (idempotent) frees its place."""

    limiter: StreamLimiter
    client: str
    authenticated: bool
    released: bool = field(default=False)

    def release(self) -> None:
        """Give the place back."""
        if not self.released:
            self.released = True
            self.limiter._release(self)


class StreamLimiter:
    """Counts open streams per client and in total, and refuses those over a limit."""

    def __init__(
        self,
        *,
        per_client: int,
        total: int,
        anonymous_share: float,
        retry_after: int,
        operator_reserve: int = 0,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if per_client < 1 or total < 1 or not 0 <= anonymous_share <= 1:
            raise ValueError("stream limits must be positive and the share within [0, 1]")
        if not 0 <= operator_reserve < total:
            raise ValueError("the operators' reserve must be smaller than the total")
        self.per_client = per_client
        self.total = total
        self.operator_reserve = operator_reserve
        self.anonymous_limit = int(total * anonymous_share)
        self.retry_after = retry_after
        self.metrics = metrics
        self._by_client: Counter[str] = Counter()
        self._open = 0
        self._anonymous = 0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: GatewayMetrics | None) -> StreamLimiter:
        """The limiter of the ``STREAM_*`` settings."""
        return cls(
            per_client=settings.stream_max_per_client,
            total=settings.stream_max_total,
            anonymous_share=settings.stream_anonymous_share,
            retry_after=settings.stream_retry_after,
            operator_reserve=settings.stream_operator_reserve,
            metrics=metrics,
        )

    @property
    def open(self) -> int:
        """How many streams are open."""
        return self._open

    def acquire(self, client: str, *, authenticated: bool, operator: bool = False) -> StreamLease:
        """Admit a stream of ``client`` (``user:<id>`` or ``ip:<address>``; ``operator``: it
        holds ``metrics:read``) or raise the problem (429 or 503) that refuses it."""
        headers = {"Retry-After": str(self.retry_after)}
        if self._by_client[client] >= self.per_client:
            self._refused("per_client")
            raise TooManyRequests(
                f"At most {self.per_client} streams may be open at once per client",
                headers=headers,
            )
        if not authenticated and self._anonymous >= self.anonymous_limit:
            self._refused("anonymous")
            raise ServiceUnavailable(
                "Too many streams are open without authentication; retry later or sign in",
                headers=headers,
            )
        if not operator and self._open >= self.total - self.operator_reserve:
            self._refused("reserve")
            raise ServiceUnavailable(
                "The remaining streams are kept for operators; retry later", headers=headers
            )
        if self._open >= self.total:
            self._refused("total")
            raise ServiceUnavailable("Too many streams are open; retry later", headers=headers)
        self._by_client[client] += 1
        self._open += 1
        if not authenticated:
            self._anonymous += 1
        if self.metrics is not None:
            self.metrics.streams_open.labels(_kind(authenticated)).inc()
        return StreamLease(self, client, authenticated)

    def _release(self, lease: StreamLease) -> None:
        self._by_client[lease.client] -= 1
        if self._by_client[lease.client] <= 0:
            del self._by_client[lease.client]
        self._open -= 1
        if not lease.authenticated:
            self._anonymous -= 1
        if self.metrics is not None:
            self.metrics.streams_open.labels(_kind(lease.authenticated)).dec()

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.streams_refused.labels(reason).inc()


def _kind(authenticated: bool) -> str:
    return "authenticated" if authenticated else "anonymous"
