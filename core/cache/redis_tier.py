"""The Redis tier (``redis.asyncio`` with hiredis): records, invalidation versions and locks.

Besides storing records, Redis is where the cache coordinates its instances: the version counter of
every invalidated key and tag lives here (read in the same round trip as the record), the short
lock that keeps a stampede off the database, and the pub/sub channel of invalidations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from redis.asyncio import Redis

from core.breaker import CircuitBreaker
from core.cache.remote import RemoteTier

__all__ = ["Lock", "RedisTier", "Versions"]

log = logging.getLogger("core.cache")

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: record, lock, version counters...; ARGV: lock token ("" for none), lock ttl in ms.
# The lock is taken only when the record is absent: a miss costs no extra round trip.
_READ = """
local record = redis.call('GET', KEYS[1])
local locked = 0
if not record and ARGV[1] ~= '' then
    if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
        locked = 1
    else
        locked = 2
    end
end
local reply = {record, locked}
for index = 3, #KEYS do
    reply[index] = redis.call('GET', KEYS[index])
end
return reply
"""

# KEYS: record, lock; ARGV: value, ttl in ms, lock token. Store, then release the lock if held.
_WRITE_AND_UNLOCK = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
end
return 1
"""

Versions = tuple[int, ...]
Lock = tuple[str, str, float]  # key, token, ttl in seconds


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _bytes(raw: bytes | str | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def _version(raw: bytes | str | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        return -1  # not a counter this cache wrote: matches no record's stamp


class RedisTier(RemoteTier):
    """Records and coordination in Redis, each call failing open (see ``RemoteTier``).

    ``subscriber`` (``client`` by default) is the client invalidations are listened to on: its
    reads are not bounded by the tier, so it keeps a socket timeout of its own.
    """

    name = "redis"

    def __init__(
        self,
        client: Redis,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        concurrency: int = 16,
        subscriber: Redis | None = None,
    ) -> None:
        super().__init__(timeout=timeout, breaker=breaker, concurrency=concurrency)
        self.client = client
        self.subscriber = subscriber if subscriber is not None else client
        self._unlock = client.register_script(_UNLOCK)
        self._read = client.register_script(_READ)
        self._write_and_unlock = client.register_script(_WRITE_AND_UNLOCK)

    async def read(
        self, key: str, version_keys: Sequence[str], lock: Lock | None = None
    ) -> tuple[bytes | None, bool | None, Versions] | None:
        """The record of ``key`` and the current versions, in one round trip; ``None`` if down.

        With ``lock`` (key, token, ttl), the lock is also taken if the record is absent (a Lua
        script); the second item says whether it was (``None`` when no lock was asked for or
        needed). Without, a plain ``MGET``: atomic too, and cheaper for Redis to run.
        """
        if lock is None:

            async def plain() -> tuple[bytes | None, bool | None, Versions]:
                reply = await self.client.mget([key, *version_keys])
                return _bytes(reply[0]), None, tuple(_version(v) for v in reply[1:])

            return await self.guard(plain, None)
        lock_key, token, ttl = lock

        async def op() -> tuple[bytes | None, bool | None, Versions]:
            reply = await self._read(
                keys=[key, lock_key, *version_keys], args=[token, _millis(ttl)]
            )
            locked = {0: None, 1: True, 2: False}[reply[1]]
            return _bytes(reply[0]), locked, tuple(_version(v) for v in reply[2:])

        return await self.guard(op, None)

    async def versions(self, version_keys: Sequence[str]) -> Versions | None:
        """The current versions of ``version_keys``; ``None`` if Redis cannot be reached."""
        if not version_keys:
            return ()

        async def op() -> Versions:
            values = await self.client.mget(list(version_keys))
            return tuple(_version(v) for v in values)

        return await self.guard(op, None)

    async def get(self, key: str) -> bytes | None:
        """The record stored under ``key``."""

        async def op() -> bytes | None:
            return _bytes(await self.client.get(key))

        return await self.guard(op, None)

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

        async def op() -> bool:
            await self.client.set(key, value, px=_millis(ttl))
            return True

        return await self.guard(op, False)

    async def set_and_unlock(self, key: str, value: bytes, ttl: float, lock: Lock) -> bool:
        """Store ``value`` and release ``lock`` (key, token, ttl) in one round trip."""
        lock_key, token, _ = lock

        async def op() -> bool:
            await self._write_and_unlock(keys=[key, lock_key], args=[value, _millis(ttl), token])
            return True

        return await self.guard(op, False)

    async def try_lock(self, key: str, token: str, ttl: float) -> bool | None:
        """Take the lock ``key`` for ``ttl`` seconds if free; ``None`` if Redis cannot say."""

        async def op() -> bool:
            taken = await self.client.set(key, token, nx=True, px=_millis(ttl))
            return bool(taken)

        return await self.guard(op, None)

    async def unlock(self, key: str, token: str) -> None:
        """Release the lock ``key`` if ``token`` still holds it."""

        async def op() -> None:
            await self._unlock(keys=[key], args=[token])

        await self.guard(op, None)

    async def invalidate(
        self,
        version_keys: Sequence[str],
        *,
        keep: float,
        channel: str | None = None,
        message: bytes | None = None,
    ) -> bool:
        """Bump ``version_keys`` (kept ``keep`` seconds) and, given a ``channel``, publish
        ``message`` on it, atomically; ``False`` if Redis could not take it."""

        async def op() -> bool:
            async with self.client.pipeline(transaction=True) as pipe:
                for version_key in version_keys:
                    pipe.incr(version_key)
                    pipe.expire(version_key, math.ceil(keep))
                if channel is not None and message is not None:
                    pipe.publish(channel, message)
                await pipe.execute()
            return True

        return await self.guard(op, False)

    async def connect(self) -> None:
        """Open one connection ahead of traffic: its handshake is several round trips, better
        spent before a request than inside an operation's timeout. Failing is fine (the breaker
        deals with a Redis that is down)."""
        pool = self.client.connection_pool
        try:
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:  # Redis down at start: the calls will fail open
            log.debug("cache: no Redis connection ahead of traffic: %r", exc)
            return
        await pool.release(connection)

    async def close(self) -> None:
        """Close the clients and their pools."""
        await self.client.aclose()
        if self.subscriber is not self.client:
            await self.subscriber.aclose()
