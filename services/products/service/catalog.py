"""Rules of the catalog: categories, products, listing pages and batch reads.

A product write locks the category tree (shared; a category move takes it exclusively) before
its rows, reads the categories it touches with their ancestors, publishes its event through the
outbox in the same transaction, and invalidates what it made stale once it has committed (see
``services.products.service.caching``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from core.bus import Outbox
from core.cache import Cache, cached
from core.pagination import encode_cursor
from services.products.events import ProductCreated, ProductDeleted, ProductUpdated
from services.products.models import Category, Product
from services.products.repository import (
    CatalogRepository,
    InventoryRepository,
    ListingQuery,
    MissingReference,
    SortName,
    UniqueTaken,
)
from services.products.service.caching import (
    CATEGORY_TTL,
    LISTED_FIELDS,
    LISTING_TTL,
    NOT_FOUND_TTL,
    PRODUCT_TTL,
    Stale,
    invalidate,
    listing_tags,
)
from services.products.service.errors import (
    CategoryCycle,
    CategoryInUse,
    CategoryNotFound,
    ProductNotFound,
    ProductReserved,
    SkuTaken,
    SlugTaken,
    unknown_reference,
)
from services.products.service.listing import (
    CategoryPage,
    IdPage,
    ProductPage,
    category_after,
    decode_after,
    encode_after,
    listing_key,
)

__all__ = ["CatalogService"]


class CatalogService:
    """Categories and products; reads cached in ``cache`` unless it is ``None``.

    ``inventory`` is read only to refuse deleting a product that orders hold stock of.
    """

    def __init__(
        self,
        repository: CatalogRepository,
        inventory: InventoryRepository,
        *,
        outbox: Outbox,
        cache: Cache | None,
    ) -> None:
        self.repository = repository
        self.inventory = inventory
        self.outbox = outbox
        self.cache = cache

    # cached reads ------------------------------------------------------------------------------

    @cached(
        cache=lambda self: self.cache,
        ttl=PRODUCT_TTL,
        key="product:{product_id}",
        tags=["product:{product_id}"],
        negative_ttl=NOT_FOUND_TTL,
        name="products.product",
    )
    async def _cached_product(self, product_id: uuid.UUID) -> Product | None:
        return await self.repository.get_product(product_id)

    @cached(
        cache=lambda self: self.cache,
        ttl=LISTING_TTL,
        key=lambda self, query: listing_key(query),
        tags=lambda self, query: listing_tags(query),
        name="products.page",
    )
    async def _cached_page(self, query: ListingQuery) -> IdPage:
        return await self._load_page(query)

    @cached(
        cache=lambda self: self.cache,
        ttl=CATEGORY_TTL,
        key="categories:page:{limit}:{after}",
        tags=["categories"],
        name="products.categories",
    )
    async def _cached_categories(self, limit: int, after: str | None) -> CategoryPage:
        return await self._load_categories(limit, after)

    @cached(
        cache=lambda self: self.cache,
        ttl=CATEGORY_TTL,
        key="category:{category_id}",
        tags=["categories"],
        negative_ttl=NOT_FOUND_TTL,
        name="products.category",
    )
    async def _cached_category(self, category_id: uuid.UUID) -> Category | None:
        return await self.repository.get_category(category_id)

    def _read(
        self, cached_read: Callable[[], Awaitable[Any]], direct: Callable[[], Awaitable[Any]]
    ) -> Awaitable[Any]:
        return cached_read() if self.cache is not None else direct()

    async def _load_page(self, query: ListingQuery) -> IdPage:
        rows = await self.repository.list_products(query)
        next_cursor = None
        if len(rows) >= query.limit:
            rows = rows[: query.limit - 1]
            last_id, last_value = rows[-1]
            next_cursor = encode_after(query.sort, last_value, last_id)
        return IdPage(ids=[product_id for product_id, _ in rows], next_cursor=next_cursor)

    async def _load_categories(self, limit: int, after: str | None) -> CategoryPage:
        items = await self.repository.list_categories(limit=limit + 1, after=after)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].slug)
        return CategoryPage(items=items, next_cursor=next_cursor)

    # categories --------------------------------------------------------------------------------

    async def list_categories(self, *, limit: int, cursor: str | None) -> CategoryPage:
        """A page of categories, by slug."""
        after = category_after(cursor) if cursor is not None else None
        page: CategoryPage = await self._read(
            lambda: self._cached_categories(limit, after),
            lambda: self._load_categories(limit, after),
        )
        return page

    async def get_category(self, category_id: uuid.UUID) -> Category:
        """The category with this id, or ``CategoryNotFound``."""
        category: Category | None = await self._read(
            lambda: self._cached_category(category_id),
            lambda: self.repository.get_category(category_id),
        )
        if category is None:
            raise CategoryNotFound("No such category")
        return category

    async def create_category(
        self, *, name: str, slug: str, parent_id: uuid.UUID | None
    ) -> Category:
        """Add a category (under ``parent_id``, or at the top level)."""
        try:
            async with self.repository.transaction() as conn:
                category = await self.repository.insert_category(
                    name=name, slug=slug, parent_id=parent_id, conn=conn
                )
        except UniqueTaken as exc:
            raise SlugTaken("A category with this slug already exists") from exc
        except MissingReference as exc:
            raise unknown_reference("parent_id", "category") from exc
        stale = Stale()
        stale.categories()
        await invalidate(self.cache, stale)
        return category

    async def update_category(self, category_id: uuid.UUID, changes: Mapping[str, Any]) -> Category:
        """Rename, re-slug or move a category; a move may not create a cycle."""
        stale = Stale()
        try:
            async with self.repository.transaction() as conn:
                moving = "parent_id" in changes
                if moving:
                    await self.repository.lock_tree(conn, exclusive=True)
                before = await self.repository.get_category(category_id, conn)
                if before is None:
                    raise CategoryNotFound("No such category")
                effective = {k: v for k, v in changes.items() if getattr(before, k) != v}
                if not effective:
                    return before
                new_parent = effective.get("parent_id")
                if new_parent is not None and await self.repository.is_descendant(
                    new_parent, category_id, conn
                ):
                    raise CategoryCycle("A category cannot move under itself or its descendants")
                chains = set()
                if "parent_id" in effective:
                    chains = await self.repository.category_chains(
                        [before.parent_id, new_parent], conn
                    )
                category = await self.repository.update_category(category_id, effective, conn)
                if category is None:
                    raise CategoryNotFound("No such category")
        except UniqueTaken as exc:
            raise SlugTaken("A category with this slug already exists") from exc
        except MissingReference as exc:
            raise unknown_reference("parent_id", "category") from exc
        stale.categories()
        if chains:
            stale.listings(chains)
            stale.stock(chains)
        await invalidate(self.cache, stale)
        return category

    async def delete_category(self, category_id: uuid.UUID) -> None:
        """Delete a category that has neither sub-categories nor products."""
        try:
            async with self.repository.transaction() as conn:
                if not await self.repository.delete_category(category_id, conn):
                    raise CategoryNotFound("No such category")
        except MissingReference as exc:
            raise CategoryInUse("The category still has sub-categories or products") from exc
        stale = Stale()
        stale.categories()
        await invalidate(self.cache, stale)

    # products ----------------------------------------------------------------------------------

    async def get(self, product_id: uuid.UUID) -> Product:
        """The product with this id, or ``ProductNotFound``."""
        product = await self.find(product_id)
        if product is None:
            raise ProductNotFound("No such product")
        return product

    async def find(self, product_id: uuid.UUID) -> Product | None:
        """The product with this id, or ``None``; read as ``get`` reads it (the warm-up's)."""
        product: Product | None = await self._read(
            lambda: self._cached_product(product_id),
            lambda: self.repository.get_product(product_id),
        )
        return product

    @staticmethod
    def product_json(product: Product) -> bytes:
        """The JSON of ``product`` as ``get_json`` returns it (and the cache keeps it)."""
        return CatalogService._cached_product.dumps(product)

    async def get_json(self, product_id: uuid.UUID) -> bytes:
        """The JSON of the product with this id (its ``Product`` fields, as the cache keeps it),
        or ``ProductNotFound``; read as ``get`` reads it, a hit in memory without decoding or
        encoding it again."""
        if self.cache is None:
            product = await self.repository.get_product(product_id)
            body = None if product is None else self.product_json(product)
        else:
            body = await self._cached_product.json(product_id)
        if body is None:
            raise ProductNotFound("No such product")
        return body

    async def get_many(self, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The products with these ids that exist, by id. Each is read through the per-product
        cache, as ``get`` reads it: cached and invalidated on its own, as fresh as ``get``."""
        wanted = list(dict.fromkeys(product_ids))
        if self.cache is None:
            return await self.repository.get_products(wanted)
        products = await asyncio.gather(*(self._cached_product(pid) for pid in wanted))
        return {p.id: p for p in products if p is not None}

    async def list_products(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        sort: str | None = None,
        category_id: uuid.UUID | None = None,
        q: str | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
    ) -> ProductPage:
        """A page of products; without ``sort``, by relevance to ``q`` or else newest first."""
        effective: SortName = sort or ("rank" if q else "-created_at")  # type: ignore[assignment]
        query = ListingQuery(
            sort=effective,
            limit=limit + 1,
            category_id=category_id,
            q=q,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock,
            after=decode_after(cursor, effective) if cursor is not None else None,
        )
        if self.cache is None:
            page = await self._load_page(query)
            found = await self.repository.get_products(page.ids)
            return ProductPage(
                items=[found[pid] for pid in page.ids if pid in found],
                next_cursor=page.next_cursor,
            )
        page = await self._cached_page(query)
        products = await asyncio.gather(*(self._cached_product(pid) for pid in page.ids))
        return ProductPage(
            items=[p for p in products if p is not None], next_cursor=page.next_cursor
        )

    async def create(
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
    ) -> Product:
        """Add a product with ``stock`` units on hand; publishes ``product.created``."""
        try:
            async with self.repository.transaction() as conn:
                await self.repository.lock_tree(conn)
                product = await self.repository.insert_product(
                    sku=sku,
                    name=name,
                    description=description,
                    price_cents=price_cents,
                    currency=currency,
                    category_id=category_id,
                    attributes=attributes,
                    stock=stock,
                    conn=conn,
                )
                chain = await self.repository.category_chains([category_id], conn)
                await self.outbox.publish(
                    conn,
                    ProductCreated(
                        product_id=product.id,
                        sku=product.sku,
                        name=product.name,
                        price_cents=product.price_cents,
                        currency=product.currency,
                        category_id=product.category_id,
                        attributes=product.attributes,
                        stock=product.stock,
                        created_at=product.created_at,
                    ),
                )
        except UniqueTaken as exc:
            raise SkuTaken("A product with this SKU already exists") from exc
        except MissingReference as exc:
            raise unknown_reference("category_id", "category") from exc
        stale = Stale()
        stale.product(product.id)
        stale.listings(chain)
        await invalidate(self.cache, stale)
        return product

    async def update(self, product_id: uuid.UUID, changes: Mapping[str, Any]) -> Product:
        """Change some fields of a product; publishes ``product.updated`` if anything changed."""
        stale = Stale()
        try:
            async with self.repository.transaction() as conn:
                await self.repository.lock_tree(conn)
                before = await self.repository.lock_product(product_id, conn)
                if before is None:
                    raise ProductNotFound("No such product")
                effective = {k: v for k, v in changes.items() if getattr(before, k) != v}
                if not effective:
                    return before
                after = await self.repository.update_product(product_id, effective, conn)
                assert after is not None  # locked above
                if effective.keys() & LISTED_FIELDS:
                    stale.listings(
                        await self.repository.category_chains(
                            [before.category_id, after.category_id], conn
                        )
                    )
                await self.outbox.publish(
                    conn,
                    ProductUpdated(
                        product_id=after.id,
                        sku=after.sku,
                        name=after.name,
                        price_cents=after.price_cents,
                        currency=after.currency,
                        category_id=after.category_id,
                        attributes=after.attributes,
                        changed=sorted(effective),
                        updated_at=after.updated_at,
                    ),
                )
        except UniqueTaken as exc:
            raise SkuTaken("A product with this SKU already exists") from exc
        except MissingReference as exc:
            raise unknown_reference("category_id", "category") from exc
        stale.product(product_id)
        await invalidate(self.cache, stale)
        return after

    async def delete(self, product_id: uuid.UUID) -> None:
        """Delete a product and its inventory; refused while orders hold reserved stock."""
        stale = Stale()
        async with self.repository.transaction() as conn:
            await self.repository.lock_tree(conn)
            product = await self.repository.lock_product(product_id, conn)
            if product is None:
                raise ProductNotFound("No such product")
            stock = await self.inventory.lock_inventory([product_id], conn)
            if product_id in stock and stock[product_id].reserved > 0:
                raise ProductReserved(
                    f"{stock[product_id].reserved} units are reserved by orders; "
                    "release or ship them first"
                )
            await self.repository.delete_product(product_id, conn)
            stale.listings(await self.repository.category_chains([product.category_id], conn))
            await self.outbox.publish(conn, ProductDeleted(product_id=product_id, sku=product.sku))
        stale.product(product_id)
        await invalidate(self.cache, stale)
