"""Per-account login throttling: an exponential delay between attempts, never a lock-out.

The gateway limits logins per client address; this limits them per account. Two counters:

- per account *and* client address: the first ``free`` attempts go through at once, then each
  must wait ``base * 2**(n - free)`` seconds after the previous one, at most ``cap``. A guesser is
  slowed to one try a minute on each account, and nobody else is: the owner, from their own
  address, logs in as usual while someone elsewhere hammers the account;
- per account, from every address together, over a fixed window: past ``account_free`` attempts
  in ``window`` seconds the same exponential delay applies to all, so a botnet gets at most that
  many guesses per window. Locking the owner out takes that many attempts every window, and even
  then the owner waits at most ``cap`` seconds per attempt.

Attempts are counted when they start, not when they fail, so a burst of parallel guesses gets
the free attempts, not hundreds; a success resets both counters. Accounts are keyed by a hash of
the normalized email (no address is stored in Redis), and unknown emails are throttled alike, so
throttling reveals nothing about which accounts exist. When Redis cannot be reached the check
fails open (logged): the per-address limit at the edge still holds, and an outage of the
throttle must not stop every user from logging in.
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

# KEYS[1]: the account and client's counter, KEYS[2]: the account's. ARGV: now (ms), free
# attempts per client, free attempts per account and window, base delay (ms), cap (ms), the
# client counter's TTL (s), the account window (s). Returns the ms still to wait, or 0 after
# recording this attempt.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local function wait(key, free)
  local n = tonumber(redis.call('HGET', key, 'n') or '0')
  if n < free then return 0 end
  local last = tonumber(redis.call('HGET', key, 't') or '0')
  local delay = math.min(tonumber(ARGV[5]), tonumber(ARGV[4]) * 2 ^ (n - free))
  return math.max(0, math.ceil(last + delay - now))
end
local waiting = math.max(wait(KEYS[1], tonumber(ARGV[2])), wait(KEYS[2], tonumber(ARGV[3])))
if waiting > 0 then return waiting end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], 't', now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
if redis.call('HINCRBY', KEYS[2], 'n', 1) == 1 then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
end
redis.call('HSET', KEYS[2], 't', now)
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
        account_free_attempts: int = 50,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        window: float = 900.0,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._free = free_attempts
        self._account_free = account_free_attempts
        self._window = max(1, int(window))
        self._base_ms = int(base_delay * 1000)
        self._cap_ms = int(max_delay * 1000)
        # A client's count is forgotten this long after its last attempt.
        self._ttl = max(int(window), math.ceil(max_delay) + 1)
        self._script = redis.register_script(_ATTEMPT)

    def _keys(self, email: str, client: str) -> list[str]:
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        pair = hashlib.sha256(f"{account}\n{client}".encode()).hexdigest()
        return [f"{self._ns}:auth:login:client:{pair}", f"{self._ns}:auth:login:account:{account}"]

    async def attempt(self, email: str, client: str, *, now: float | None = None) -> None:
        """Record an attempt on ``email`` from ``client`` (its address), or raise
        ``LoginThrottled`` if it must wait."""
        stamp = int((time.time() if now is None else now) * 1000)
        try:
            wait_ms = await self._script(
                keys=self._keys(email, client),
                args=[
                    stamp,
                    self._free,
                    self._account_free,
                    self._base_ms,
                    self._cap_ms,
                    self._ttl,
                    self._window,
                ],
            )
        except RedisError as exc:
            log.warning("login throttle unavailable, not applied: %r", exc)
            return
        if int(wait_ms) > 0:
            raise LoginThrottled(int(wait_ms) / 1000)

    async def succeeded(self, email: str, client: str) -> None:
        """The account's owner got in: start counting afresh."""
        try:
            await self._redis.delete(*self._keys(email, client))
        except RedisError as exc:
            log.warning("login throttle unavailable, not reset: %r", exc)
