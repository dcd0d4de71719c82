"""``Idempotency-Key`` for writes that create things (API.md "Conventions").

The same key with the same request returns the first response (status, body and headers such as
``Location``) and runs nothing again; the same key with a different request is a 422; a second
request while the first is still running is a 409. Keys are scoped to the route and the caller,
kept in Redis for a day. When Redis is unreachable the request is refused with 503 rather than
risk creating something twice.

What is recorded, as the payment APIs do it (Stripe's rule: a result is saved only once the
endpoint started executing):

- *Nothing* for a request refused before any work: authentication and permissions (401/403), an
  invalid ``Idempotency-Key`` header, and everything ``RouteDef`` checks before it calls the
  handler: an unreadable or too large body (400/413/415) and parameter or body validation (422).
  Those never claim the key, so the client may fix the request and retry with the same key.
- The response of the handler, 2xx or 4xx: a 4xx raised by the business logic once it ran (409
  "email taken", 422 "unknown product", ...) is replayed like a success, since the handler may have
  acted before deciding.
- Nothing for a 5xx or an exception: the key is released and a retry runs again.

Bounds, so that one caller cannot fill Redis:

- at most ``max_keys`` live keys per caller and route (pending or recorded): a new key beyond that
  is refused with 429 and a ``Retry-After`` until the oldest record expires. Evicting the oldest
  instead would silently break its promise (a retry of it would create a second order), so the
  newcomer is refused instead; repeats of a live key are always answered. Anonymous callers
  are told apart by address only (behind the gateway they all share its address), so
  ``core.handlers`` gives their scopes a larger quota (``IDEMPOTENCY_MAX_ANONYMOUS_KEYS``);
- a record is at most ``max_record_bytes`` (the stored response's body and headers). A larger
  response is not stored: the record keeps its status, its ``Location`` and a SHA-256 of its body,
  the key stays used (the write is never repeated) and a replay answers 409
  ``idempotency-response-too-large`` with ``original_status``, ``original_location`` (when there
  was one) and ``original_body_sha256``: enough to find what was created, never a guess at it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import orjson
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import Conflict, ServiceUnavailable, TooManyRequests, ValidationFailed

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "IdempotencyKeysExhausted",
    "IdempotencyStore",
    "ResponseTooLargeToReplay",
    "fingerprint",
]

log = logging.getLogger("core.idempotency")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY = 255
# Headers of the first response that are not replayed: they describe that response's
# transmission (or its request), not the outcome a client asked about.
_NOT_REPLAYED = frozenset(
    {"content-length", "content-type", "date", "server", "set-cookie", "x-correlation-id"}
)

# Claims a key atomically: answers the existing record, or refuses past the caller's quota, or
# marks the key pending and indexes it (score = when it expires, in ms of the server's clock).
_CLAIM = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, tostring(tonumber(oldest[2]) - now)}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1}
"""

# Stores the outcome and moves its expiry in the index.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

_FORGET = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class IdempotencyKeysExhausted(TooManyRequests):
    """The caller holds ``max_keys`` live keys on this route (429 with ``Retry-After``)."""

    type: ClassVar[str] = "https://aioshop.dev/problems/idempotency-keys-exhausted"


class ResponseTooLargeToReplay(Conflict):
    """The key was used; its response was too large to keep, so it cannot be replayed (409)."""

    type: ClassVar[str] = "https://aioshop.dev/problems/idempotency-response-too-large"


class IdempotencyStore:
    """Remembers the response to each (route, caller, key) in Redis.

    ``ttl`` is how long a record is kept (seconds), ``lock_ttl`` how long a pending claim holds
    the key if its process dies, ``max_keys`` the live keys a scope (route and caller) may hold,
    ``max_record_bytes`` the largest response kept for replay (see the module docstring).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        ttl: int = 86_400,
        lock_ttl: int = 60,
        max_keys: int = 1000,
        max_record_bytes: int = 65_536,
    ):
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl
        self._lock_ttl = lock_ttl
        self._max_keys = max_keys
        self._max_record_bytes = max_record_bytes

    async def run(
        self,
        *,
        scope: str,
        key: str,
        fingerprint: str,
        call: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Run ``call`` once for ``key``; replay its response for repeats of the same request."""
        if not key or len(key) > _MAX_KEY or not key.isprintable():
            raise ValidationFailed(
                [
                    {
                        "loc": ["header", IDEMPOTENCY_HEADER],
                        "msg": f"must be 1 to {_MAX_KEY} printable characters",
                        "type": "idempotency_key_invalid",
                    }
                ]
            )
        member = hashlib.sha256(key.encode()).hexdigest()
        redis_key = f"{self._ns}:idem:{scope}:{member}"
        index_key = f"{self._ns}:idem-index:{scope}"
        keys = (redis_key, index_key)
        pending = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
        try:
            claim = await self._redis.eval(
                _CLAIM,
                2,
                *keys,
                pending,
                self._lock_ttl * 1000,
                self._max_keys,
                member,
                self._ttl * 1000,
            )
        except RedisError as exc:
            raise ServiceUnavailable("Idempotency keys cannot be checked right now") from exc
        outcome = int(claim[0])
        if outcome == 0:
            return self._replay(claim[1], fingerprint)
        if outcome == 2:
            retry_after = max(1, math.ceil(int(claim[1]) / 1000))
            raise IdempotencyKeysExhausted(
                f"At most {self._max_keys} Idempotency-Keys may be live on this route;"
                " retry later or without a key",
                headers={"Retry-After": str(retry_after)},
            )

        try:
            response = await call()
        except BaseException:
            await self._forget(keys, member)
            raise
        if response.status >= 500 or not isinstance(response, web.Response):
            await self._forget(keys, member)
            return response
        record = self._record(response, fingerprint)
        try:
            await self._redis.eval(_RECORD, 2, *keys, record, self._ttl * 1000, member)
        except RedisError:
            # The write happened; a retry with this key would repeat it. Say so in the log.
            log.exception("could not record the response for idempotency key %s", redis_key)
        return response

    def _record(self, response: web.Response, fingerprint: str) -> bytes:
        body = response.body if isinstance(response.body, bytes) else b""
        headers = [
            [name, value]
            for name, value in response.headers.items()
            if name.lower() not in _NOT_REPLAYED
        ]
        record: dict[str, Any] = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": response.status,
            "content_type": response.content_type,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
        }
        encoded = orjson.dumps(record)
        if len(encoded) <= self._max_record_bytes:
            return encoded
        location = response.headers.get("Location")
        return orjson.dumps(
            {
                "state": "too_large",
                "fingerprint": fingerprint,
                "status": response.status,
                "location": location[:2048] if location else None,
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
        )

    async def _forget(self, keys: tuple[str, str], member: str) -> None:
        # On failure the pending marker (and its index entry) expire by themselves.
        with contextlib.suppress(RedisError):
            await self._redis.eval(_FORGET, 2, *keys, member)

    @staticmethod
    def _replay(raw: bytes | str | None, fingerprint: str) -> web.StreamResponse:
        if raw is None:
            raise Conflict("A request with this Idempotency-Key just finished; retry it")
        record: dict[str, Any] = orjson.loads(raw)
        if record.get("fingerprint") != fingerprint:
            raise ValidationFailed(
                [
                    {
                        "loc": ["header", IDEMPOTENCY_HEADER],
                        "msg": "this key was used with a different request",
                        "type": "idempotency_key_reused",
                    }
                ]
            )
        state = record.get("state")
        if state == "too_large":
            extra: dict[str, Any] = {
                "original_status": int(record["status"]),
                "original_body_sha256": str(record["body_sha256"]),
            }
            if record.get("location"):
                extra["original_location"] = str(record["location"])
            raise ResponseTooLargeToReplay(
                "This Idempotency-Key was used and the request completed, but its response was"
                " too large to keep for a replay",
                headers={REPLAYED_HEADER: "true"},
                extra=extra,
            )
        if state != "done":
            raise Conflict("A request with this Idempotency-Key is still being processed")
        response = web.Response(
            body=str(record["body"]).encode("utf-8"),
            status=int(record["status"]),
            content_type=str(record["content_type"]),
        )
        for name, value in record.get("headers", []):  # e.g. Location
            response.headers.add(str(name), str(value))
        response.headers[REPLAYED_HEADER] = "true"
        return response


def fingerprint(method: str, path: str, body: bytes) -> str:
    """A digest of what makes two requests "the same" for an idempotency key."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()
