"""The base of every part of the orders repository: SQL on one asyncpg pool."""

from __future__ import annotations

from core.db import Repository

__all__ = ["Store"]


class Store(Repository):
    """Reads and writes one part of the orders database (see ``core.db.Repository``)."""
