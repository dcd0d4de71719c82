"""SQL of the catalog: categories, their tree, products and the rows of a listing page."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from core.db import Connection
from services.products.models import Category, Product
from services.products.repository.base import MissingReference, Repository, UniqueTaken
from services.products.repository.listing import ListingQuery

__all__ = ["CatalogRepository"]

_PRODUCT_COLUMNS = """
    p.id, p.sku, p.name, p.description, p.price_cents, p.currency, p.category_id, p.attributes,
    COALESCE(i.available, 0) AS stock, p.created_at, p.updated_at
"""
_UPDATABLE = frozenset(
    {"sku", "name", "description", "price_cents", "currency", "category_id", "attributes"}
)


def _category(row: asyncpg.Record | None) -> Category | None:
    return Category(**dict(row)) if row is not None else None


def _product(row: asyncpg.Record | None) -> Product | None:
    return Product(**dict(row)) if row is not None else None


class CatalogRepository(Repository):
    """Reads and writes categories and products (a new product comes with its inventory row)."""

    # categories and their tree -----------------------------------------------------------------

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
        rows = await self.pool.fetch(
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
        rows = await self.pool.fetch(
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

    async def categories_of(
        self, product_ids: Sequence[uuid.UUID], conn: Connection
    ) -> list[uuid.UUID | None]:
        """The categories of these products."""
        rows = await conn.fetch(
            "SELECT category_id FROM products WHERE id = ANY ($1::uuid[])", list(product_ids)
        )
        return [row["category_id"] for row in rows]

    # listing -----------------------------------------------------------------------------------

    async def subtree(self, category_id: uuid.UUID) -> list[uuid.UUID]:
        """The category and every category below it (none if it does not exist)."""
        rows = await self.pool.fetch(
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
        rows = await self.pool.fetch(sql, *args)
        return [(row["id"], row["sort_key"]) for row in rows]
