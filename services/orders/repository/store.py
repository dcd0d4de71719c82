"""The base of every part of the orders repository: SQL on one asyncpg pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from core.db import Connection, transaction

__all__ = ["Store"]


class Store:
    """Reads and writes one part of the orders database through ``pool``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a new transaction."""
        async with transaction(self.pool) as conn:
            yield conn
