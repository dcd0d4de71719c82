"""Per-account login throttling: an exponential delay between attempts, never a lock-out.

The gateway limits logins per client address; this limits them per account, whatever the
address, so a botnet cannot guess one account's password at the rate of its size. The first
``free`` attempts of an account go through at once; each further one must wait
``base * 2**(n - free)`` seconds after the previous attempt, at most ``cap``: the owner is
delayed, never locked out. A successful login resets the account. Attempts are counted when they
start, not when they fail, so a burst of parallel guesses gets ``free`` tries, not hundreds.

Accounts are keyed by a hash of the normalized email (no address is stored in Redis), and unknown
emails are throttled alike, so throttling reveals nothing about which accounts exist. When Redis
cannot be reached the check fails open (logged): the per-address limit at the edge still holds,
and an outage of the throttle must not stop every user from logging in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import TooManyRequests

__all__ = ["LoginThrottle", "LoginThrottled"]

log = logging.getLogger("services.users.throttle")

# KEYS[1]: the account's hash; ARGV: now (ms), free attempts, base delay (ms), cap (ms), TTL (s).
# Returns the milliseconds still to wait, or 0 after recording this attempt.
_ATTEMPT = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[2])
if n >= free then
  local delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (n - free))
  local wait = last + delay - now
  if wait > 0 then return math.ceil(wait) end
end
redis.call('HSET', KEYS[1], 'n', n + 1, 't', now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 0
"""


class LoginThrottled(TooManyRequests):
    """Too many recent login attempts for this account: retry after ``Retry-After`` seconds."""

    type = "https://aioshop.dev/problems/login-throttled"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many login attempts for this account; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after = seconds


class LoginThrottle:
    """Counts login attempts per account in Redis and imposes the delay."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        free_attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        window: float = 900.0,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._free = free_attempts
        self._base_ms = int(base_delay * 1000)
        self._cap_ms = int(max_delay * 1000)
        # The count is forgotten this long after the last attempt.
        self._ttl = max(int(window), math.ceil(max_delay) + 1)
        self._script = redis.register_script(_ATTEMPT)

    def _key(self, email: str) -> str:
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        return f"{self._ns}:auth:login:{digest}"

    async def attempt(self, email: str, *, now: float | None = None) -> None:
        """Record an attempt for ``email``, or raise ``LoginThrottled`` if it must wait."""
        stamp = int((time.time() if now is None else now) * 1000)
        try:
            wait_ms = await self._script(
                keys=[self._key(email)],
                args=[stamp, self._free, self._base_ms, self._cap_ms, self._ttl],
            )
        except RedisError as exc:
            log.warning("login throttle unavailable, not applied: %r", exc)
            return
        if int(wait_ms) > 0:
            raise LoginThrottled(int(wait_ms) / 1000)

    async def succeeded(self, email: str) -> None:
        """The account's owner got in: start counting afresh."""
        try:
            await self._redis.delete(self._key(email))
        except RedisError as exc:
            log.warning("login throttle unavailable, not reset: %r", exc)
