"""``Idempotency-Key`` for writes that create things (API.md "Conventions").

The same key with the same request returns the first response (status, body and headers such as
``Location``) and runs nothing again; the same key with a different request is a 422; a second
request while the first is still running is a 409. Keys are scoped to the route and the caller,
kept in Redis for a day. When Redis is unreachable the request is refused with 503 rather than
risk creating something twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import Conflict, ServiceUnavailable, ValidationFailed

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "IdempotencyStore", "fingerprint"]

log = logging.getLogger("core.idempotency")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY = 255
# Headers of the first response that are not replayed: they describe that response's
# transmission (or its request), not the outcome a client asked about.
_NOT_REPLAYED = frozenset(
    {"content-length", "content-type", "date", "server", "set-cookie", "x-correlation-id"}
)


class IdempotencyStore:
    """Remembers the response to each (route, caller, key) in Redis."""

    def __init__(self, redis: Redis, *, namespace: str, ttl: int = 86_400, lock_ttl: int = 60):
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl
        self._lock_ttl = lock_ttl

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
        redis_key = f"{self._ns}:idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"
        pending = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
        try:
            claimed = await self._redis.set(redis_key, pending, nx=True, ex=self._lock_ttl)
            if not claimed:
                return self._replay(await self._redis.get(redis_key), fingerprint)
        except RedisError as exc:
            raise ServiceUnavailable("Idempotency keys cannot be checked right now") from exc

        try:
            response = await call()
        except BaseException:
            await self._forget(redis_key)
            raise
        if response.status >= 500 or not isinstance(response, web.Response):
            await self._forget(redis_key)
            return response
        record = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": response.status,
            "content_type": response.content_type,
            "headers": [
                [name, value]
                for name, value in response.headers.items()
                if name.lower() not in _NOT_REPLAYED
            ],
            "body": (response.body or b"").decode("utf-8")
            if isinstance(response.body, bytes)
            else "",
        }
        try:
            await self._redis.set(redis_key, orjson.dumps(record), ex=self._ttl)
        except RedisError:
            # The write happened; a retry with this key would repeat it. Say so in the log.
            log.exception("could not record the response for idempotency key %s", redis_key)
        return response

    async def _forget(self, redis_key: str) -> None:
        # On failure the pending marker expires by itself after lock_ttl.
        with contextlib.suppress(RedisError):
            await self._redis.delete(redis_key)

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
        if record.get("state") != "done":
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
