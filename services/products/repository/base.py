"""What the products repositories share: the pool, transactions, the category-tree lock and the
errors a constraint turns into."""

from __future__ import annotations

from core.db import Connection
from core.db import Repository as BaseRepository

__all__ = ["TREE_LOCK", "MissingReference", "Repository", "UniqueTaken"]

# pg_advisory_xact_lock key of the category tree ("cat-tree" in ASCII).
TREE_LOCK = 0x6361742D74726565


class UniqueTaken(Exception):
    """A unique column already holds the value (``column`` names it)."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


class MissingReference(Exception):
    """A referenced row does not exist, or a row is still referenced (``column`` names it)."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


class Repository(BaseRepository):
    """A products repository over one pool (see ``core.db.Repository``): several of them, of
    either kind, can share one transaction."""

    async def lock_tree(self, conn: Connection, *, exclusive: bool = False) -> None:
        """Hold the category-tree lock until the transaction ends (the first lock of all).

        Product and stock writes hold it shared while they read a category's ancestors; moving
        a category holds it exclusively, so ancestors never change between that read and the
        commit.
        """
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await conn.execute(f"SELECT {function}($1)", TREE_LOCK)
