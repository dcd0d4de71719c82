"""SQL of the products service (asyncpg, parameterized only): the one place that knows its tables.

Locks are always taken in the same order, so that concurrent writers wait instead of
deadlocking: the category-tree advisory lock (shared by product writes, exclusive for moves
of a category), then a ``reservations`` row, then ``products`` rows, then ``inventory`` rows in
ascending ``product_id``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from core.db import Connection, transaction

__all__ = [
    "Category",
    "Inventory",
    "ListingQuery",
    "MissingReference",
    "Product",
    "ProductsRepository",
    "Reservation",
    "SortKey",
    "UniqueTaken",
]

SortName = Literal["price", "-price", "name", "-created_at", "rank"]

# pg_advisory_xact_lock key of the category tree ("cat-tree" in ASCII).
TREE_LOCK = 0x6361742D74726565

_PRODUCT_COLUMNS = """
    p.id, p.sku, p.name, p.description, p.price_cents, p.currency, p.category_id, p.attributes,
    COALESCE(i.available, 0) AS stock, p.created_at, p.updated_at
"""
_UPDATABLE = frozenset(
    {"sku", "name", "description", "price_cents", "currency", "category_id", "attributes"}
)
# Sort name -> (key expression, descending)
_SORTS: dict[str, tuple[str, bool]] = {
    "price": ("p.price_cents", False),
    "-price": ("p.price_cents", True),
    "name": ("p.name", False),
    "-created_at": ("p.created_at", True),
    "rank": ("ts_rank(p.search, websearch_to_tsquery('english', {q}))", True),
}


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


@dataclass(frozen=True, slots=True)
class Category:
    """A stored category."""

    id: uuid.UUID
    name: str
    slug: str
    parent_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Product:
    """A stored product; ``stock`` is its inventory's ``available``."""

    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category_id: uuid.UUID | None
    attributes: dict[str, Any]
    stock: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Inventory:
    """A product's stock."""

    product_id: uuid.UUID
    on_hand: int
    reserved: int
    available: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """What is recorded for an order: its status and its lines (``{product_id: quantity}``)."""

    order_id: uuid.UUID
    status: Literal["reserved", "failed", "released", "committed"]
    reason: Literal["out_of_stock", "unknown_product"] | None
    product_ids: list[uuid.UUID]
    lines: dict[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class SortKey:
    """Where a page of a listing ends: the last row's sort value and id."""

    value: Any
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ListingQuery:
    """One page of ``GET /products``: filters, order, where to start, how many rows."""

    sort: SortName
    limit: int
    category_id: uuid.UUID | None = None
    q: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    after: SortKey | None = None

    def sql(self, categories: Sequence[uuid.UUID] = ()) -> tuple[str, list[Any]]:
        """The statement and its arguments: ``id`` and ``sort_key`` of up to ``limit`` rows.

        ``categories`` is the resolved filter: ``category_id`` and all its sub-categories.
        """
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        joins, where = "", []
        q = arg(self.q) if self.q is not None else None
        if q is not None:
            where.append(f"p.search @@ websearch_to_tsquery('english', {q})")
        if self.category_id is not None:
            if len(categories) == 1:  # "=" lets the planner walk (category_id, sort key) indexes
                where.append(f"p.category_id = {arg(categories[0])}")
            else:
                where.append(f"p.category_id = ANY ({arg(list(categories))}::uuid[])")
        if self.min_price is not None:
            where.append(f"p.price_cents >= {arg(self.min_price)}")
        if self.max_price is not None:
            where.append(f"p.price_cents <= {arg(self.max_price)}")
        if self.in_stock is not None:
            joins = "JOIN inventory i ON i.product_id = p.id"
            where.append("i.available > 0" if self.in_stock else "i.available = 0")
        template, descending = _SORTS[self.sort]
        key = template.format(q=q)
        if self.after is not None:
            value = arg(self.after.value)
            if self.sort == "rank":
                value += "::real"
            operator = "<" if descending else ">"
            where.append(f"({key}, p.id) {operator} ({value}, {arg(self.after.id)})")
        direction = "DESC" if descending else "ASC"
        sql = f"""
            SELECT p.id, {key} AS sort_key
              FROM products p {joins}
             {"WHERE " + " AND ".join(where) if where else ""}
             ORDER BY {key} {direction}, p.id {direction}
             LIMIT {arg(self.limit)}
        """  # noqa: S608 (every value is a parameter; the fragments are this module's constants)  # nosec B608: as said
        return sql, args


def _category(row: asyncpg.Record | None) -> Category | None:
    return Category(**dict(row)) if row is not None else None


def _product(row: asyncpg.Record | None) -> Product | None:
    return Product(**dict(row)) if row is not None else None


def _inventory(row: asyncpg.Record) -> Inventory:
    return Inventory(
        product_id=row["product_id"],
        on_hand=row["on_hand"],
        reserved=row["reserved"],
        available=row["available"],
    )


class ProductsRepository:
    """Reads and writes categories, products, inventory and reservations.

    Methods take an optional connection so that the service can group several of them in one
    transaction (``async with repo.transaction() as conn``).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction."""
        async with transaction(self._pool) as conn:
            yield conn

    def _db(self, conn: Connection | None) -> Connection | asyncpg.Pool:
        return conn if conn is not None else self._pool

    # the category tree -------------------------------------------------------------------------

    async def lock_tree(self, conn: Connection, *, exclusive: bool = False) -> None:
        """Hold the category-tree lock until the transaction ends.

        Product writes hold it shared while they read a category's ancestors; moving a category
        holds it exclusively, so ancestors never change between that read and the commit.
        """
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await conn.execute(f"SELECT {function}($1)", TREE_LOCK)

    async def insert_category(
        self,
        *,
        name: str,
        slug: str,
        parent_id: uuid.UUID | None,
        conn: Connection | None = None,
    ) -> Category:
        """Insert a category; ``UniqueTaken("slug")`` or ``MissingReference("parent_id")``."""
        try:
            row = await self._db(conn).fetchrow(
                """
                INSERT INTO categories (id, name, slug, parent_id) VALUES ($1, $2, $3, $4)
                RETURNING id, name, slug, parent_id
                """,
                uuid.uuid4(),
                name,
                slug,
                parent_id,
            )
        except asyncpg.UniqueViolationError as exc:
            raise UniqueTaken("slug") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise MissingReference("parent_id") from exc
        category = _category(row)
        assert category is not None
        return category

    async def get_category(
        self, category_id: uuid.UUID, conn: Connection | None = None
    ) -> Category | None:
        """The category with this id."""
        row = await self._db(conn).fetchrow(
            "SELECT id, name, slug, parent_id FROM categories WHERE id = $1", category_id
        )
        return _category(row)

    async def list_categories(self, *, limit: int, after: str | None) -> list[Category]:
        """Categories by slug, starting after slug ``after``."""
        rows = await self._pool.fetch(
            """
            SELECT id, name, slug, parent_id FROM categories
             WHERE $2::text IS NULL OR slug > $2
             ORDER BY slug
             LIMIT $1
            """,
            limit,
            after,
        )
        return [Category(**dict(row)) for row in rows]

    async def update_category(
        self, category_id: uuid.UUID, changes: Mapping[str, Any], conn: Connection
    ) -> Category | None:
        """Apply ``changes`` (``name``, ``slug``, ``parent_id``); ``None`` if it is gone."""
        columns = [column for column in changes if column in {"name", "slug", "parent_id"}]
        assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=2))
        try:
            row = await conn.fetchrow(
                f"""
                UPDATE categories SET {assignments}, updated_at = now() WHERE id = $1
                RETURNING id, name, slug, parent_id
                """,  # noqa: S608 (column names from a fixed set; values are parameters)  # nosec B608: as said
                category_id,
                *(changes[column] for column in columns),
            )
        except asyncpg.UniqueViolationError as exc:
            raise UniqueTaken("slug") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise MissingReference("parent_id") from exc
        return _category(row)

    async def is_descendant(
        self, candidate: uuid.UUID, ancestor: uuid.UUID, conn: Connection
    ) -> bool:
        """Whether ``candidate`` is ``ancestor`` or lies somewhere below it."""
        found: bool = await conn.fetchval(
            """
            WITH RECURSIVE up AS (
                SELECT id, parent_id FROM categories WHERE id = $1
                UNION
                SELECT c.id, c.parent_id FROM categories c JOIN up ON c.id = up.parent_id
            )
            SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)
            """,
            candidate,
            ancestor,
        )
        return found

    async def delete_category(self, category_id: uuid.UUID, conn: Connection) -> bool:
        """Delete a category; ``MissingReference("category_id")`` while anything refers to it."""
        try:
            status = await conn.execute("DELETE FROM categories WHERE id = $1", category_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise MissingReference("category_id") from exc
        return status == "DELETE 1"

    async def category_chains(
        self, category_ids: Iterable[uuid.UUID | None], conn: Connection | None = None
    ) -> set[uuid.UUID]:
        """Every category in ``category_ids`` and all their ancestors."""
        ids = sorted({c for c in category_ids if c is not None})
        if not ids:
            return set()
        rows = await self._db(conn).fetch(
            """
            WITH RECURSIVE up AS (
                SELECT id, parent_id FROM categories WHERE id = ANY ($1::uuid[])
                UNION
                SELECT c.id, c.parent_id FROM categories c JOIN up ON c.id = up.parent_id
            )
            SELECT id FROM up
            """,
            ids,
        )
        return {row["id"] for row in rows}

    # products ----------------------------------------------------------------------------------

    async def insert_product(
        self,
        *,
        sku: str,
        name: str,
        description: str,
        price_cents: int,
        currency: str,
        category_id: uuid.UUID | None,
        attributes: dict[str, Any],
        stock: int,
        conn: Connection,
    ) -> Product:
        """Insert a product and its inventory (``stock`` on hand).

        ``UniqueTaken("sku")``, or ``MissingReference("category_id")`` for an unknown category.
        """
        product_id = uuid.uuid4()
        try:
            inserted = await conn.fetchval(
                """
                INSERT INTO products
                    (id, sku, name, description, price_cents, currency, category_id, attributes)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (sku) DO NOTHING
                RETURNING true
                """,
                product_id,
                sku,
                name,
                description,
                price_cents,
                currency,
                category_id,
                attributes,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise MissingReference("category_id") from exc
        if not inserted:
            raise UniqueTaken("sku")
        await conn.execute(
            "INSERT INTO inventory (product_id, on_hand) VALUES ($1, $2)", product_id, stock
        )
        product = await self.get_product(product_id, conn)
        assert product is not None
        return product

    async def get_product(
        self, product_id: uuid.UUID, conn: Connection | None = None
    ) -> Product | None:
        """The product with this id."""
        row = await self._db(conn).fetchrow(
            f"""
            SELECT {_PRODUCT_COLUMNS}
              FROM products p LEFT JOIN inventory i ON i.product_id = p.id
             WHERE p.id = $1
            """,  # noqa: S608 (a constant column list)  # nosec B608: constant columns
            product_id,
        )
        return _product(row)

    async def get_products(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The products with these ids (those that exist), by id."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_PRODUCT_COLUMNS}
              FROM products p LEFT JOIN inventory i ON i.product_id = p.id
             WHERE p.id = ANY ($1::uuid[])
            """,  # noqa: S608 (a constant column list)  # nosec B608: constant columns
            list(product_ids),
        )
        return {row["id"]: Product(**dict(row)) for row in rows}

    async def lock_product(self, product_id: uuid.UUID, conn: Connection) -> Product | None:
        """The product, its row locked until the transaction ends."""
        row = await conn.fetchrow(
            f"""
            SELECT {_PRODUCT_COLUMNS}
              FROM products p LEFT JOIN inventory i ON i.product_id = p.id
             WHERE p.id = $1
               FOR UPDATE OF p
            """,  # noqa: S608 (a constant column list)  # nosec B608: constant columns
            product_id,
        )
        return _product(row)

    async def update_product(
        self, product_id: uuid.UUID, changes: Mapping[str, Any], conn: Connection
    ) -> Product | None:
        """Apply ``changes`` (any of the updatable columns); ``None`` if the product is gone.

        ``UniqueTaken("sku")`` or ``MissingReference("category_id")``.
        """
        columns = [column for column in changes if column in _UPDATABLE]
        if columns:
            assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=2))
            try:
                status = await conn.execute(
                    f"UPDATE products SET {assignments}, updated_at = now() WHERE id = $1",  # noqa: S608 (column names from a fixed set)  # nosec B608: as said
                    product_id,
                    *(changes[column] for column in columns),
                )
            except asyncpg.UniqueViolationError as exc:
                raise UniqueTaken("sku") from exc
            except asyncpg.ForeignKeyViolationError as exc:
                raise MissingReference("category_id") from exc
            if status != "UPDATE 1":
                return None
        return await self.get_product(product_id, conn)

    async def delete_product(self, product_id: uuid.UUID, conn: Connection) -> bool:
        """Delete a product and its inventory."""
        status = await conn.execute("DELETE FROM products WHERE id = $1", product_id)
        return status == "DELETE 1"

    async def subtree(self, category_id: uuid.UUID) -> list[uuid.UUID]:
        """The category and every category below it (none if it does not exist)."""
        rows = await self._pool.fetch(
            """
            WITH RECURSIVE down AS (
                SELECT id FROM categories WHERE id = $1
                UNION
                SELECT c.id FROM categories c JOIN down d ON c.parent_id = d.id
            )
            SELECT id FROM down ORDER BY id
            """,
            category_id,
        )
        return [row["id"] for row in rows]

    async def list_products(self, query: ListingQuery) -> list[tuple[uuid.UUID, Any]]:
        """``(id, sort value)`` of the rows of one page."""
        categories: list[uuid.UUID] = []
        if query.category_id is not None:
            categories = await self.subtree(query.category_id)
            if not categories:
                return []
        sql, args = query.sql(categories)
        rows = await self._pool.fetch(sql, *args)
        return [(row["id"], row["sort_key"]) for row in rows]

    async def categories_of(
        self, product_ids: Sequence[uuid.UUID], conn: Connection
    ) -> list[uuid.UUID | None]:
        """The categories of these products."""
        rows = await conn.fetch(
            "SELECT category_id FROM products WHERE id = ANY ($1::uuid[])", list(product_ids)
        )
        return [row["category_id"] for row in rows]

    # inventory ---------------------------------------------------------------------------------

    async def get_inventory(
        self, product_id: uuid.UUID, conn: Connection | None = None
    ) -> Inventory | None:
        """The stock of this product."""
        row = await self._db(conn).fetchrow(
            "SELECT product_id, on_hand, reserved, available FROM inventory WHERE product_id = $1",
            product_id,
        )
        return _inventory(row) if row is not None else None

    async def lock_inventory(
        self, product_ids: Iterable[uuid.UUID], conn: Connection
    ) -> dict[uuid.UUID, Inventory]:
        """The stock of these products (those that exist), rows locked in ascending id."""
        rows = await conn.fetch(
            """
            SELECT product_id, on_hand, reserved, available FROM inventory
             WHERE product_id = ANY ($1::uuid[])
             ORDER BY product_id
               FOR UPDATE
            """,
            sorted(set(product_ids)),
        )
        return {row["product_id"]: _inventory(row) for row in rows}

    async def set_on_hand(self, product_id: uuid.UUID, on_hand: int, conn: Connection) -> Inventory:
        """Set ``on_hand`` of a locked row (the CHECK refuses less than ``reserved``)."""
        row = await conn.fetchrow(
            """
            UPDATE inventory SET on_hand = $2, updated_at = now() WHERE product_id = $1
            RETURNING product_id, on_hand, reserved, available
            """,
            product_id,
            on_hand,
        )
        assert row is not None
        return _inventory(row)

    async def adjust(
        self,
        lines: Mapping[uuid.UUID, int],
        conn: Connection,
        *,
        reserved: int,
        on_hand: int = 0,
    ) -> list[Inventory]:
        """Add ``reserved * quantity`` to ``reserved`` and ``on_hand * quantity`` to ``on_hand``
        of each line's (locked) row; e.g. ``reserved=1`` reserves, ``reserved=-1`` releases,
        ``reserved=-1, on_hand=-1`` commits. The CHECK makes an overdraft fail, never pass."""
        ids = sorted(lines)
        rows = await conn.fetch(
            """
            UPDATE inventory AS i
               SET reserved = i.reserved + $3 * l.quantity,
                   on_hand = i.on_hand + $4 * l.quantity,
                   updated_at = now()
              FROM unnest($1::uuid[], $2::int[]) AS l (product_id, quantity)
             WHERE i.product_id = l.product_id
            RETURNING i.product_id, i.on_hand, i.reserved, i.available
            """,
            ids,
            [lines[product_id] for product_id in ids],
            reserved,
            on_hand,
        )
        return sorted((_inventory(row) for row in rows), key=lambda inv: inv.product_id)

    # reservations ------------------------------------------------------------------------------

    async def claim_reservation(
        self,
        order_id: uuid.UUID,
        status: Literal["reserved", "released"],
        conn: Connection,
    ) -> bool:
        """Record the order with ``status`` unless it is known; whether it was new.

        A concurrent transaction claiming the same order makes this one wait for its outcome,
        so an order is decided once.
        """
        inserted = await conn.fetchval(
            """
            INSERT INTO reservations (order_id, status) VALUES ($1, $2)
            ON CONFLICT (order_id) DO NOTHING
            RETURNING true
            """,
            order_id,
            status,
        )
        return bool(inserted)

    async def lock_reservation(self, order_id: uuid.UUID, conn: Connection) -> Reservation | None:
        """The order's reservation, locked until the transaction ends."""
        row = await conn.fetchrow(
            """
            SELECT order_id, status, reason, product_ids FROM reservations
             WHERE order_id = $1 FOR UPDATE
            """,
            order_id,
        )
        if row is None:
            return None
        lines = await conn.fetch(
            """
            SELECT product_id, quantity FROM reservation_lines
             WHERE order_id = $1 ORDER BY product_id
            """,
            order_id,
        )
        return Reservation(
            order_id=row["order_id"],
            status=row["status"],
            reason=row["reason"],
            product_ids=list(row["product_ids"]),
            lines={line["product_id"]: line["quantity"] for line in lines},
        )

    async def record_lines(
        self, order_id: uuid.UUID, lines: Mapping[uuid.UUID, int], conn: Connection
    ) -> None:
        """Record the reserved lines of an order."""
        ids = sorted(lines)
        await conn.execute(
            """
            INSERT INTO reservation_lines (order_id, product_id, quantity)
            SELECT $1, l.product_id, l.quantity
              FROM unnest($2::uuid[], $3::int[]) AS l (product_id, quantity)
            """,
            order_id,
            ids,
            [lines[product_id] for product_id in ids],
        )

    async def set_reservation(
        self,
        order_id: uuid.UUID,
        status: Literal["reserved", "failed", "released", "committed"],
        conn: Connection,
        *,
        reason: str | None = None,
        product_ids: Sequence[uuid.UUID] = (),
    ) -> None:
        """Move an order's reservation to ``status``."""
        await conn.execute(
            """
            UPDATE reservations
               SET status = $2, reason = $3, product_ids = $4, updated_at = now()
             WHERE order_id = $1
            """,
            order_id,
            status,
            reason,
            list(product_ids),
        )
