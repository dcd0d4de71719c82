"""Rate limiting in Redis with GCRA (the generic cell rate algorithm), one atomic Lua script.

A limit of ``L`` requests per ``P`` seconds allows a burst of ``L`` and then one request every
``P/L`` seconds. Redis keeps one number per key, the theoretical arrival time (TAT) of the next
request; the script reads the server's clock, so any number of gateways share limits exactly.

The limiter fails open: when Redis cannot answer within ``timeout``, the request passes, the
``gateway_ratelimit_failopen`` metric counts it, and Redis is left alone for ``cooldown`` seconds
so that a dead Redis costs nothing per request.

A round trip to Redis per request was the gateway's largest cost under load, so a policy may be
decided locally (``RatePolicy.local``, with ``sync_interval`` > 0): after a key's answer from
Redis, the next requests of that key are admitted in memory while the quota is far from used up
(more than ``local_share`` of the limit left besides those admitted) and at most ``local_share``
of the limit each time; the hits admitted so are sent to Redis with the key's next request, or
by a background flush ``sync_interval`` seconds later. Near the limit every request goes to
Redis, so one gateway refuses exactly at the limit; ``n`` gateways may let through at most
``(n - 1) * local_share * limit`` more per ``sync_interval`` (hits not yet flushed). The strict
policies (login, registration) are always decided in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
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

# KEYS[1]: the counter; ARGV[1]: emission interval T = P/L (ms); ARGV[2]: period P (ms);
# ARGV[3] (optional, 0): hits admitted locally, counted and never refused (capped at a full
# period); ARGV[4] (optional, 1): 1 to decide a new request, 0 only to count ARGV[3].
# Returns {allowed, remaining, reset_ms, retry_after_ms}.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local admitted = tonumber(ARGV[3] or '0')
local decide = tonumber(ARGV[4] or '1')
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if admitted > 0 then
  tat = math.min(tat + admitted * interval, now + period)
end
local new_tat = tat + interval
local allow_at = new_tat - period
if decide == 0 or allow_at > now then
  if admitted > 0 then
    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
  end
  if decide == 0 then
    return {1, math.floor((now + period - tat) / interval + 1e-6), math.ceil(tat - now), 0}
  end
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


@dataclass(slots=True)
class _Local:
    """What this gateway knows of a key since its last answer from Redis."""

    synced_at: float  # the clock when Redis answered
    remaining: int  # the quota left then
    reset: float  # seconds until the full quota was back then
    limit: int
    period: float
    quota: int  # hits it may admit in memory before asking Redis again
    used: int = 0  # hits admitted in memory, not yet sent to Redis
    syncing: bool = False  # a request of the key is asking Redis now


class RateLimiter:
    """Checks and counts a request against a GCRA limit kept in Redis; with ``sync_interval``
    > 0, decides part of them in memory (the module's docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        timeout: float,
        cooldown: float,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sync_interval: float = 0.0,
        local_share: float = 0.0,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(GCRA_SCRIPT)
        self.namespace = namespace
        self.timeout = timeout
        self.cooldown = cooldown
        self.metrics = metrics
        self.sync_interval = sync_interval
        self.local_share = local_share
        self._clock = clock
        self._skip_until = 0.0
        self._local: dict[str, _Local] = {}
        self._flusher: asyncio.Task[None] | None = None

    def _decide_locally(self, key: str, policy: str) -> RateDecision | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        # Stale: the next request asks Redis; the ones meanwhile need not all wait for it too.
        if self._clock() - entry.synced_at >= self.sync_interval and not entry.syncing:
            return None
        if entry.used >= entry.quota or entry.remaining - entry.used - 1 < entry.quota:
            return None
        entry.used += 1
        interval = entry.period / entry.limit
        return RateDecision(
            policy=policy,
            allowed=True,
            limit=entry.limit,
            period=entry.period,
            remaining=entry.remaining - entry.used,
            reset=min(entry.period, entry.reset + entry.used * interval),
            retry_after=0,
        )

    def _remember(self, key: str, decision: RateDecision, quota: int) -> None:
        entry = self._local.get(key)
        now = self._clock()
        if entry is not None and now - entry.synced_at < self.sync_interval:
            # Answers of concurrent calls may arrive out of order: the lowest is the newest.
            if decision.remaining < entry.remaining:
                entry.remaining, entry.reset = decision.remaining, decision.reset
            return
        used = entry.used if entry is not None else 0
        self._local[key] = _Local(
            now, decision.remaining, decision.reset, decision.limit, decision.period, quota, used
        )

    async def hit(
        self, policy: str, identity: str, *, limit: int, period: float, local: bool = False
    ) -> RateDecision | None:
        """Count a request of ``identity`` under ``policy``; ``None`` if Redis is unreachable.
        ``local``: the policy may be decided in memory (with ``sync_interval`` > 0)."""
        key = f"{self.namespace}:rl:{policy}:{identity}"
        quota = int(limit * self.local_share) if local and self.sync_interval > 0 else 0
        if quota >= 1:
            decision = self._decide_locally(key, policy)
            if decision is not None:
                if self.metrics is not None:
                    self.metrics.count_ratelimit(policy, "allowed")
                return decision
        if self._clock() < self._skip_until:
            self._fail_open("cooldown")
            return None
        entry = self._local.get(key)
        admitted = 0
        if entry is not None:
            admitted, entry.used, entry.syncing = entry.used, 0, True
        interval_ms = period * 1000 / limit
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._script(
                    keys=[key], args=[interval_ms, period * 1000, admitted, 1]
                )
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
        finally:
            if entry is not None:
                entry.syncing = False
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
        if quota >= 1:
            self._remember(key, decision, quota)
        if self.metrics is not None:
            result_label = "allowed" if decision.allowed else "limited"
            self.metrics.count_ratelimit(policy, result_label)
        return decision

    async def flush(self, *, everything: bool = False) -> None:
        """Send to Redis the hits admitted in memory for keys not synced for ``sync_interval``
        (``everything``: for every key, and forget them all). A key stays known (its next
        request alone asks Redis, not every one in flight meanwhile) until it has had no hit
        for another interval."""
        horizon = self._clock() - (0 if everything else self.sync_interval)
        counts = []
        for key, entry in list(self._local.items()):
            if entry.synced_at > horizon:
                continue
            if entry.used:
                interval_ms = entry.period * 1000 / entry.limit
                counts.append((key, [interval_ms, entry.period * 1000, entry.used, 0]))
                entry.used = 0
            elif entry.synced_at <= horizon - self.sync_interval and not entry.syncing:
                del self._local[key]
        if everything:
            self._local.clear()
        if not counts:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, args in counts:
            await self._script(keys=[key], args=args, client=pipe)
        try:
            async with asyncio.timeout(self.timeout):
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("rate limiter could not flush %d counts to Redis: %r", len(counts), exc)
            self._fail_open("unreachable", len(counts))

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await self.flush()
            except Exception:  # the next round tries again: the task must not die
                log.exception("rate limiter flush failed")

    def start(self) -> None:
        """Start flushing in the background (nothing to do without ``sync_interval``)."""
        if self.sync_interval > 0 and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def aclose(self) -> None:
        """Stop the background flush and send what is left."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush(everything=True)

    def _fail_open(self, reason: str, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.ratelimit_failopen.labels(reason).inc(count)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """``limit`` requests per ``period`` seconds; per user if ``by_user`` and known, else per IP;
    ``local``: may be decided in memory between syncs with Redis (``RateLimiter``)."""

    name: str
    limit: int
    period: float
    by_user: bool = True
    local: bool = True


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
            rule: RatePolicy(f"strict:{rule}", strict[0], strict[1], by_user=False, local=False)
            for rule in strict_routes
        }
        self.exempt = frozenset(exempt)

    def select(self, method: str, path: str) -> RatePolicy | None:
        """The policy of a request; ``None`` for exempt paths (health probes, metrics)."""
        if path in self.exempt:
            return None
        rule = self.strict_rules.first(method, path)
        return self.strict[rule] if rule is not None else self.default
