"""Settings of the gateway: upstreams, timeouts, balancing, rate limits, public routes.

Every upstream is a pool of instances given as comma-separated base URLs, e.g.
``UPSTREAM_PRODUCTS=http://h1:8002,http://h2:8002`` (a DNS name there is one instance, resolved
per connection), or discovered: ``dns+http://products:8002`` is one instance per A/AAAA record
of ``products``, re-resolved as they come and go (``core.discovery``).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator

from core.discovery import DNS_PREFIX
from core.settings import BaseServiceSettings
from gateway.routing import RouteRule

__all__ = [
    "DEFAULT_PUBLIC_ROUTES",
    "DEFAULT_ROUTES",
    "DEFAULT_STREAM_ROUTES",
    "RateSpec",
    "Settings",
    "parse_instances",
    "parse_rate",
]

RateSpec = Annotated[str, Field(pattern=r"^\d{1,9}/\d{1,7}$")]

# Path prefix -> upstream name; the longest matching prefix wins.
DEFAULT_ROUTES: dict[str, str] = {
    "/api/v1/auth": "users",
    "/api/v1/users": "users",
    "/api/v1/roles": "users",
    "/api/v1/categories": "products",
    "/api/v1/products": "products",
    "/api/v1/orders": "orders",
    "/dashboard": "web",
    "/api/v1/admin/events": "web",
}

# Requests whose responses are long-lived streams (rules as below); WebSockets always are.
DEFAULT_STREAM_ROUTES: tuple[str, ...] = ("* /dashboard/stream", "* /dashboard/stream/**")

# "METHOD[,METHOD] /path": ``*`` matches within one path segment, ``**`` matches the rest.
DEFAULT_PUBLIC_ROUTES: tuple[str, ...] = (
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",
    "GET,HEAD /api/v1/categories",
    "GET,HEAD /api/v1/categories/**",
    "GET,HEAD /api/v1/products",
    "GET,HEAD /api/v1/products/**",
    "* /dashboard",
    "* /dashboard/**",
)


def parse_instances(value: str) -> list[str]:
    """Split ``"http://h1:8002, http://h2:8002"`` into base URLs (no trailing slash); an entry
    may be ``dns+http://name:port`` (discovered instances)."""
    instances = []
    for raw in value.split(","):
        url = raw.strip().rstrip("/")
        if not url:
            continue
        parts = urlsplit(url.removeprefix(DNS_PREFIX))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream instance must be an http(s) base URL, not {raw!r}")
        if parts.path or parts.query or parts.fragment:
            raise ValueError(f"an upstream instance is a base URL without a path: {raw!r}")
        instances.append(url)
    return instances


def parse_rate(spec: str) -> tuple[int, float]:
    """``"10/60"`` -> (10 requests, 60 seconds)."""
    limit, _, period = spec.partition("/")
    count, seconds = int(limit), float(period)
    if count < 1 or seconds <= 0:
        raise ValueError(f"a rate is LIMIT/SECONDS with both positive, not {spec!r}")
    return count, seconds


class Settings(BaseServiceSettings):
    """The gateway's settings; environment variables are the upper-cased field names.

    ``GATEWAY_PORT`` (8000), ``UPSTREAM_USERS``/``_PRODUCTS``/``_ORDERS``/``_WEB``, timeouts in
    seconds, balancing and breaker thresholds, the overload bounds ``UPSTREAM_MAX_CONCURRENCY``,
    ``UPSTREAM_QUEUE_SIZE``, ``UPSTREAM_QUEUE_TIMEOUT`` and ``UPSTREAM_RETRY_AFTER``,
    ``RATE_LIMIT_*``, ``PUBLIC_ROUTES`` (JSON list),
    the limits of long-lived streams ``STREAM_*``; the client timeouts ``HTTP_*_TIMEOUT`` are
    core's.
    """

    port: int = Field(
        default=8000, ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT", "port")
    )

    upstream_users: str = "http://127.0.0.1:8001"
    upstream_products: str = "http://127.0.0.1:8002"
    upstream_orders: str = "http://127.0.0.1:8003"
    upstream_web: str = "http://127.0.0.1:8080"
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    # Upstreams that must have a healthy instance for the gateway's /readyz to pass.
    ready_upstreams: list[str] = Field(default_factory=list)
    # The upstreams whose /openapi.json is merged into the gateway's.
    openapi_upstreams: list[str] = Field(default_factory=lambda: ["users", "products", "orders"])
    openapi_cache_ttl: float = Field(default=30.0, ge=0)

    # Timeouts: a whole request (all attempts), one connect, waiting for the response headers,
    # and the longest silence while a body streams.
    request_timeout: float = Field(default=30.0, gt=0, le=600)
    upstream_connect_timeout: float = Field(default=1.0, gt=0, le=60)
    upstream_timeout: float = Field(default=10.0, gt=0, le=600)
    upstream_read_timeout: float = Field(default=30.0, gt=0, le=3600)
    upstream_pool_size: int = Field(default=512, ge=1)
    upstream_pool_per_host: int = Field(default=0, ge=0)
    upstream_keepalive: float = Field(default=30.0, gt=0)
    # Bodies up to this size are read whole (and so can be retried); larger ones stream.
    buffer_bytes: int = Field(default=64 * 1024, ge=0)

    # Overload: at most ``upstream_max_concurrency`` proxied requests in flight per upstream (all
    # its instances together, as Envoy's max_requests per cluster; long-lived streams are
    # counted apart, see ``stream_*``). Past it, up to ``upstream_queue_size`` more wait at most
    # ``upstream_queue_timeout`` seconds for a place, first come first served; the rest are shed
    # at once with 503 and ``Retry-After: upstream_retry_after``. Queue size or timeout 0: no
    # waiting at all.
    upstream_max_concurrency: int = Field(default=256, ge=1, le=100_000)
    upstream_queue_size: int = Field(default=64, ge=0, le=100_000)
    upstream_queue_timeout: float = Field(default=0.5, ge=0, le=60)
    upstream_retry_after: int = Field(default=1, ge=1, le=3600)
    # When no instance of an upstream passes its readiness check but some still answer it (a
    # dependency they share is down), send requests to those rather than refusing them all.
    upstream_panic_routing: bool = True

    health_path: str = "/readyz"
    health_interval: float = Field(default=2.0, gt=0, le=300)
    health_timeout: float = Field(default=1.0, gt=0, le=60)
    unhealthy_threshold: int = Field(default=2, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)
    eject_after: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=5.0, gt=0, le=600)
    breaker_max_cooldown: float = Field(default=60.0, gt=0, le=3600)

    retry_attempts: int = Field(default=1, ge=0, le=5)
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min_per_second: float = Field(default=10.0, ge=0)

    rate_limit_enabled: bool = True
    rate_limit_default: RateSpec = "600/60"
    rate_limit_auth: RateSpec = "10/60"
    rate_limit_auth_routes: list[str] = Field(
        default_factory=lambda: ["POST /api/v1/auth/login", "POST /api/v1/auth/register"]
    )
    rate_limit_exempt: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics"]
    )
    rate_limit_namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    rate_limit_timeout: float = Field(default=0.25, gt=0, le=10)
    rate_limit_cooldown: float = Field(default=1.0, ge=0, le=60)
    # The default policy is decided in memory between syncs with Redis (gateway.ratelimit):
    # every ``sync_interval`` seconds at most, up to ``local_share`` of the limit in between.
    # 0 for either: every request asks Redis.
    rate_limit_sync_interval: float = Field(default=0.25, ge=0, le=10)
    rate_limit_local_share: float = Field(default=0.1, ge=0, le=0.5)

    # Long-lived streams (the dashboard's event stream, every WebSocket): their own upstream pool
    # (``stream_max_total`` connections, never the API's), at most ``stream_max_per_client`` at
    # once per user (with a valid token) or per client IP (without), at most
    # ``stream_anonymous_share`` of the total for clients without a token, each ended after
    # ``stream_max_lifetime`` seconds (an EventSource reconnects). Refusals: 429 (per client) or
    # 503 (total), with ``Retry-After: stream_retry_after``.
    stream_routes: list[str] = Field(default_factory=lambda: list(DEFAULT_STREAM_ROUTES))
    stream_max_per_client: int = Field(default=4, ge=1, le=10_000)
    stream_max_total: int = Field(default=200, ge=1, le=100_000)
    stream_anonymous_share: float = Field(default=0.5, ge=0, le=1)
    # The last places of the total, kept for holders of metrics:read (operators): registering
    # is open to anyone, so authenticated alone is not enough to hold every place.
    stream_operator_reserve: int = Field(default=20, ge=0, le=100_000)
    # Seconds between checks that an authenticated WebSocket's token still holds.
    stream_recheck_interval: float = Field(default=15.0, gt=0, le=3600)
    stream_max_lifetime: float = Field(default=900.0, gt=0, le=86_400)
    stream_retry_after: int = Field(default=5, ge=1, le=3600)

    public_routes: list[str] = Field(default_factory=lambda: list(DEFAULT_PUBLIC_ROUTES))
    # The gateway's port is public: its /metrics only to this machine, or with metrics:read.
    metrics_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"], max_length=64
    )
    identity_secret: SecretStr | None = None
    hsts_max_age: int = Field(default=31_536_000, ge=0)

    @field_validator("upstream_users", "upstream_products", "upstream_orders", "upstream_web")
    @classmethod
    def _valid_instances(cls, value: str) -> str:
        parse_instances(value)
        return value

    @field_validator("rate_limit_default", "rate_limit_auth")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("rate_limit_auth_routes", "stream_routes", "public_routes")
    @classmethod
    def _valid_route_rules(cls, value: list[str]) -> list[str]:
        RouteRule(value)  # "METHODS /path/glob" each: refused here, not when the app is built
        return value

    @field_validator("routes")
    @classmethod
    def _valid_routes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value:
            if not prefix.startswith("/") or prefix.endswith("/") or "{" in prefix:
                raise ValueError(f"a route prefix starts with / and has no trailing /: {prefix!r}")
        return value

    def upstreams(self) -> dict[str, list[str]]:
        """Each upstream's instances: the ``UPSTREAM_<NAME>`` fields, split."""
        return {
            "users": parse_instances(self.upstream_users),
            "products": parse_instances(self.upstream_products),
            "orders": parse_instances(self.upstream_orders),
            "web": parse_instances(self.upstream_web),
        }

    @property
    def rate_namespace(self) -> str:
        """The Redis key prefix of rate-limit counters."""
        return self.rate_limit_namespace or f"{self.redis_namespace}:gw"
