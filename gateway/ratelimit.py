"""Rate limiting in Redis with GCRA (the generic cell rate algorithm), one atomic Lua script.

A limit of ``L`` requests per ``P`` seconds allows a burst of ``L`` and then one request every
``P/L`` seconds. Redis keeps one number per key, the theoretical arrival time (TAT) of the next
request; the script reads the server's clock, so any number of gateways share limits exactly.

The limiter fails open: when Redis cannot answer within ``timeout``, the request passes, the
``gateway_ratelimit_failopen`` metric counts it, and Redis is left alone for ``cooldown`` seconds
so that a dead Redis costs nothing per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.metrics import GatewayMetrics
from gateway.routing import RouteRule

__all__ = [
    "GCRA_SCRIPT",
    "RATE_DECISION",
    "RateDecision",
    "RateLimiter",
    "RatePolicies",
    "RatePolicy",
    "rate_limit_headers",
]

log = logging.getLogger("gateway.ratelimit")

# KEYS[1]: the counter; ARGV[1]: emission interval T = P/L (ms); ARGV[2]: period P (ms).
# Returns {allowed, remaining, reset_ms, retry_after_ms}.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
end
-- At a very high rate the interval is below the clock's resolution: still a valid expiry.
local ttl = math.max(1, math.ceil(new_tat - now))
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return {1, math.floor((now - allow_at) / interval + 1e-6), math.ceil(new_tat - now), 0}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one check: what the ``RateLimit-*`` headers say."""

    policy: str
    allowed: bool
    limit: int
    period: float
    remaining: int
    reset: float  # seconds until the full quota is back
    retry_after: float  # seconds until a request is allowed again (0 when allowed)


RATE_DECISION = web.RequestKey("gateway_rate_decision", RateDecision)


def _seconds(period: float) -> str:
    """A window in plain decimal seconds (``:g`` would write a week as ``604800`` but a longer
    window as ``1e+06``, which no client parses as a number of seconds)."""
    if float(period).is_integer():
        return str(int(period))
    return f"{period:.3f}".rstrip("0").rstrip(".")


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """``RateLimit-Limit``/``-Remaining``/``-Reset``/``-Policy``, and ``Retry-After`` if refused."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(decision.reset))),
        "RateLimit-Policy": f"{decision.limit};w={_seconds(decision.period)}",
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return headers


class RateLimiter:
    """Checks and counts a request against a GCRA limit kept in Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        timeout: float,
        cooldown: float,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script = redis.register_script(GCRA_SCRIPT)
        self.namespace = namespace
        self.timeout = timeout
        self.cooldown = cooldown
        self.metrics = metrics
        self._clock = clock
        self._skip_until = 0.0

    async def hit(
        self, policy: str, identity: str, *, limit: int, period: float
    ) -> RateDecision | None:
        """Count a request of ``identity`` under ``policy``; ``None`` if Redis is unreachable."""
        if self._clock() < self._skip_until:
            self._fail_open("cooldown")
            return None
        key = f"{self.namespace}:rl:{policy}:{identity}"
        interval_ms = period * 1000 / limit
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._script(keys=[key], args=[interval_ms, period * 1000])
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            log.warning("rate limiter cannot reach Redis, failing open: %r", exc)
            self._skip_until = self._clock() + self.cooldown
            self._fail_open("unreachable")
            return None
        except RedisError as exc:  # Redis answered with an error: a bug, not an outage
            log.error("rate limit script failed, failing open: %r", exc)
            self._skip_until = self._clock() + self.cooldown
            self._fail_open("error")
            return None
        allowed, remaining, reset_ms, retry_ms = (int(value) for value in result)
        decision = RateDecision(
            policy=policy,
            allowed=bool(allowed),
            limit=limit,
            period=period,
            remaining=max(0, remaining),
            reset=reset_ms / 1000,
            retry_after=retry_ms / 1000,
        )
        if self.metrics is not None:
            result_label = "allowed" if decision.allowed else "limited"
            self.metrics.ratelimit.labels(policy, result_label).inc()
        return decision

    def _fail_open(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.ratelimit_failopen.labels(reason).inc()


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """``limit`` requests per ``period`` seconds; per user if ``by_user`` and known, else per IP."""

    name: str
    limit: int
    period: float
    by_user: bool = True


class RatePolicies:
    """Which policy a request falls under: a strict one per listed route, else the default."""

    def __init__(
        self,
        *,
        default: RatePolicy,
        strict: tuple[int, float],
        strict_routes: list[str],
        exempt: list[str],
    ) -> None:
        self.default = default
        self.strict_rules = RouteRule(strict_routes)
        # Each strict route has a bucket of its own: ten logins do not use up registrations.
        self.strict = {
            rule: RatePolicy(f"strict:{rule}", strict[0], strict[1], by_user=False)
            for rule in strict_routes
        }
        self.exempt = frozenset(exempt)

    def select(self, method: str, path: str) -> RatePolicy | None:
        """The policy of a request; ``None`` for exempt paths (health probes, metrics)."""
        if path in self.exempt:
            return None
        rule = self.strict_rules.first(method, path)
        return self.strict[rule] if rule is not None else self.default
