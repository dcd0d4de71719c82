"""The memcached tier (aiomcache), within memcached's limits: 250-byte keys, 1 MB values."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any
from urllib.parse import urlsplit

import aiomcache

from core.breaker import CircuitBreaker
from core.cache.remote import RemoteTier

__all__ = ["MAX_MEMCACHED_TTL", "MemcachedTier", "memcached_address"]

MAX_MEMCACHED_TTL = 30 * 86_400  # beyond this memcached reads an expiry as a Unix time
_PLAIN_KEY = re.compile(r"[!-~]{1,250}")  # printable ASCII, no space: memcached's key rules


def memcached_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``memcached://host:port`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "memcached" or not parts.hostname:
        raise ValueError(f"not a memcached:// URL: {url!r}")
    return parts.hostname, parts.port or 11211


def _memcached_key(key: str) -> bytes:
    if _PLAIN_KEY.fullmatch(key):
        return key.encode("ascii")
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{key.split(':', 1)[0][:64]}:h:{digest}".encode("ascii", "replace")


class _Client(aiomcache.Client):
    """aiomcache's client, except that a connection the server closed ends a command.

    aiomcache 0.8 reads the reply of a simple command (set, delete, ...) until a line ends in
    CRLF; on a closed connection every read returns ``b""`` at once, so it spins forever and
    holds the event loop, which no timeout can interrupt (aio-libs/aiomcache#502, fixed upstream
    by #503, unreleased). Drop this class once a release carries the fix.
    """

    async def _execute_simple_command(self, conn: Any, raw_command: bytes) -> bytes:
        response = bytearray()
        conn.writer.write(raw_command)
        await conn.writer.drain()
        while not response.endswith(b"\r\n"):
            line = await conn.reader.readline()
            if not line:
                # The message the error middleware knows as a closed connection.
                raise aiomcache.ClientException("Memcached closed the connection", b"")
            response.extend(line)
        return bytes(response[:-2])


class MemcachedTier(RemoteTier):
    """Records in memcached, each call failing open (see ``RemoteTier``).

    Keys that are too long or not plain ASCII are replaced by a SHA-256 of themselves (prefixed by
    the namespace), so any cache key can be stored.
    """

    name = "memcached"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        breaker: CircuitBreaker,
        pool_size: int = 8,
    ) -> None:
        super().__init__(timeout=timeout, breaker=breaker, concurrency=pool_size)
        self.client: aiomcache.Client = _Client(host, port, pool_size=pool_size)

    async def get(self, key: str) -> bytes | None:
        """The record stored under ``key``."""

        async def op() -> bytes | None:
            return await self.client.get(_memcached_key(key))

        return await self.guard(op, None)

    async def set(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl`` seconds (at most 30 days)."""
        exptime = min(MAX_MEMCACHED_TTL, max(1, math.ceil(ttl)))

        async def op() -> bool:
            return await self.client.set(_memcached_key(key), value, exptime=exptime)

        return await self.guard(op, False)

    async def reset(self) -> None:
        """Close the idle connections after a failure.

        aiomcache returns a connection to its pool even when a timeout interrupted it halfway
        through a reply; the next command on it would read that stale reply.
        """
        await self.client.close()

    async def close(self) -> None:
        """Close the connections."""
        await self.client.close()
