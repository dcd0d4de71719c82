"""Business rules of the products service: catalog, inventory, reservations. No aiohttp, no SQL.

Caching. Reads go through ``@cached`` when the service has a cache:

- ``product:{id}`` (and ``inventory:{id}``), tagged ``product:{id}``: one product, with its stock;
- a listing page is cached as the *ids* of its products and its next cursor, tagged ``catalog``,
  ``listings:<scope>`` and, when it filters on stock, ``stock:<scope>``, where ``<scope>`` is
  ``all`` or ``category:{id}`` (the category asked for); its items are then read through the
  per-product cache, so a stock or price change reaches every listing that shows the product by
  invalidating that product alone;
- the category list and each category, tagged ``categories``.

Every write collects what it made stale (``Stale``) and invalidates it once its transaction has
committed, never before (a read between the two would cache the old value again):

- product created/deleted, or updated in a listed field (name, description, price, category):
  ``product:{id}`` and ``listings:all`` + ``listings:category:{c}`` for the product's old and new
  category and their ancestors (a category's listing includes its sub-categories); other fields:
  ``product:{id}`` alone;
- stock change: ``product:{id}``; when availability crosses zero also ``stock:all`` +
  ``stock:category:{c}`` up the tree (only then can an ``in_stock`` listing change);
- a category moved: the ``listings:``/``stock:`` tags of its old and new ancestors; any category
  write: ``categories``.

Invalidation bumps versions in Redis and reaches every instance (see ``core.cache``), so a read
through any instance is at most ~1 s staler than the commit. If the process dies between commit
and invalidation, entries live out their ttl (60 s products, 30 s listings).

Reservations are keyed by order id (see ``services.products.events``). Each runs in one
transaction that first claims the order's ``reservations`` row (``INSERT ... ON CONFLICT DO
NOTHING``: a concurrent attempt for the same order waits for the first and then replays its
outcome), then locks the inventory rows in ascending product id (``FOR UPDATE``), checks every
line, and either adjusts all of them or none. The table's CHECK (``0 <= reserved <= on_hand``)
backs this up. Outcome events go through the outbox in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson

from core.bus import Event, Outbox
from core.cache import Cache, cached
from core.db import Connection
from core.errors import Conflict, NotFound, ValidationFailed
from core.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.products.events import (
    InventoryChanged,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    ReservedItem,
)
from services.products.repository import (
    Category,
    Inventory,
    ListingQuery,
    MissingReference,
    Product,
    ProductsRepository,
    Reservation,
    SortKey,
    SortName,
    UniqueTaken,
)

__all__ = [
    "CategoryCycle",
    "CategoryInUse",
    "CategoryNotFound",
    "CategoryPage",
    "IdPage",
    "ProductNotFound",
    "ProductPage",
    "ProductReserved",
    "ProductsService",
    "ReservationOutcome",
    "SkuTaken",
    "SlugTaken",
    "Stale",
    "StockBelowReserved",
    "listing_tags",
]

log = logging.getLogger("services.products")

PRODUCT_TTL = 60.0
LISTING_TTL = 30.0
CATEGORY_TTL = 300.0
NOT_FOUND_TTL = 5.0
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # the pattern of services.products.schemas.Slug
LISTED_FIELDS = frozenset({"name", "description", "price_cents", "category_id"})


class ProductNotFound(NotFound):
    """No product with that id."""


class CategoryNotFound(NotFound):
    """No category with that id."""


class SkuTaken(Conflict):
    """Another product has this SKU."""

    type: ClassVar[str] = "https://aioshop.dev/problems/sku-taken"


class SlugTaken(Conflict):
    """Another category has this slug."""

    type: ClassVar[str] = "https://aioshop.dev/problems/slug-taken"


class StockBelowReserved(Conflict):
    """``on_hand`` would fall below what orders have reserved."""

    type: ClassVar[str] = "https://aioshop.dev/problems/stock-below-reserved"


class ProductReserved(Conflict):
    """A product with reserved stock cannot be deleted (orders are waiting for it)."""

    type: ClassVar[str] = "https://aioshop.dev/problems/product-reserved"


class CategoryInUse(Conflict):
    """A category with sub-categories or products cannot be deleted."""

    type: ClassVar[str] = "https://aioshop.dev/problems/category-in-use"


class CategoryCycle(Conflict):
    """A category cannot move under itself or one of its sub-categories."""

    type: ClassVar[str] = "https://aioshop.dev/problems/category-cycle"


def _unknown(loc: str, what: str) -> ValidationFailed:
    return ValidationFailed(
        [{"loc": ["body", loc], "msg": f"No {what} with this id", "type": "reference_unknown"}]
    )


@dataclass
class Stale:
    """Cache tags a transaction made stale: invalidated once it has committed."""

    tags: set[str] = field(default_factory=set)

    def product(self, product_id: uuid.UUID) -> None:
        """The product's own reads (product and inventory)."""
        self.tags.add(f"product:{product_id}")

    def listings(self, categories: Iterable[uuid.UUID]) -> None:
        """Every listing whose membership or order may change, in these categories (and all)."""
        self.tags.add("listings:all")
        self.tags.update(f"listings:category:{c}" for c in categories)

    def stock(self, categories: Iterable[uuid.UUID]) -> None:
        """Every listing filtering on stock, in these categories (and all)."""
        self.tags.add("stock:all")
        self.tags.update(f"stock:category:{c}" for c in categories)

    def categories(self) -> None:
        """The category list and reads."""
        self.tags.add("categories")


def listing_tags(query: ListingQuery) -> list[str]:
    """The tags of a cached listing page (see the module docstring)."""
    scope = "all" if query.category_id is None else f"category:{query.category_id}"
    tags = ["catalog", f"listings:{scope}"]
    if query.in_stock is not None:
        tags.append(f"stock:{scope}")
    return tags


def _listing_key(query: ListingQuery) -> str:
    digest = hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"products:page:{digest[:40]}"


@dataclass(frozen=True, slots=True)
class IdPage:
    """A cached listing page: its product ids, in order, and the cursor of the next page."""

    ids: list[uuid.UUID]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ProductPage:
    """A page of products."""

    items: list[Product]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class CategoryPage:
    """A page of categories."""

    items: list[Category]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ReservationOutcome:
    """What an order's reservation is after a reserve, release or commit.

    ``items`` are the order's lines (``{product_id: quantity}``) when it holds or held stock;
    ``changed`` is ``False`` when the call changed nothing (a replay, or nothing to do).
    """

    order_id: uuid.UUID
    status: Literal["reserved", "failed", "released", "committed", "unknown"]
    changed: bool
    reason: Literal["out_of_stock", "unknown_product"] | None = None
    product_ids: list[uuid.UUID] = field(default_factory=list)
    items: dict[uuid.UUID, int] = field(default_factory=dict)


def _items(lines: Mapping[uuid.UUID, int]) -> list[ReservedItem]:
    return [ReservedItem(product_id=pid, quantity=lines[pid]) for pid in sorted(lines)]


def _crossed_zero(before: Inventory, after: Inventory) -> bool:
    return (before.available > 0) != (after.available > 0)


def merge_lines(lines: Iterable[tuple[uuid.UUID, int]]) -> dict[uuid.UUID, int]:
    """Order lines by product, quantities of repeated products summed (each must be > 0)."""
    merged: dict[uuid.UUID, int] = {}
    for product_id, quantity in lines:
        if quantity <= 0:
            raise ValueError(f"quantity of {product_id} must be positive, not {quantity}")
        merged[product_id] = merged.get(product_id, 0) + quantity
    if not merged:
        raise ValueError("an order has at least one line")
    return merged


def _decode_after(cursor: str, sort: SortName) -> SortKey:
    """The keyset a cursor names; it must have been issued for the same sort."""
    name, value, last_id = decode_cursor(cursor, 3)
    try:
        if name != sort or not isinstance(last_id, str):
            raise ValueError("cursor of another sort")
        key: Any
        if sort in ("price", "-price"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError("price")
            key = value
        elif sort == "name":
            if not isinstance(value, str):
                raise TypeError("name")
            key = value
        elif sort == "-created_at":
            if not isinstance(value, str):
                raise TypeError("created_at")
            key = datetime.fromisoformat(value)
            if key.tzinfo is None:
                raise ValueError("naive time")
            key = key.astimezone(UTC)
        else:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError("rank")
            key = float(value)
            if not math.isfinite(key):
                raise ValueError("rank")
        return SortKey(key, uuid.UUID(last_id))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidCursor() from exc


def _encode_after(sort: SortName, value: Any, last_id: uuid.UUID) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    return encode_cursor(sort, value, str(last_id))


class ProductsService:
    """Catalog, inventory and reservations; reads cached in ``cache`` unless it is ``None``."""

    def __init__(
        self, repository: ProductsRepository, *, outbox: Outbox, cache: Cache | None
    ) -> None:
        self.repository = repository
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
        ttl=PRODUCT_TTL,
        key="inventory:{product_id}",
        tags=["product:{product_id}"],
        negative_ttl=NOT_FOUND_TTL,
        name="products.inventory",
    )
    async def _cached_inventory(self, product_id: uuid.UUID) -> Inventory | None:
        return await self.repository.get_inventory(product_id)

    @cached(
        cache=lambda self: self.cache,
        ttl=LISTING_TTL,
        key=lambda self, query: _listing_key(query),
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
            next_cursor = _encode_after(query.sort, last_value, last_id)
        return IdPage(ids=[product_id for product_id, _ in rows], next_cursor=next_cursor)

    async def _load_categories(self, limit: int, after: str | None) -> CategoryPage:
        items = await self.repository.list_categories(limit=limit + 1, after=after)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].slug)
        return CategoryPage(items=items, next_cursor=next_cursor)

    async def _invalidate(self, stale: Stale) -> None:
        if self.cache is not None and stale.tags:
            await self.cache.invalidate(tags=sorted(stale.tags))

    async def invalidate(self, stale: Stale) -> None:
        """Invalidate what a committed transaction made stale (see the ``*_in`` methods)."""
        await self._invalidate(stale)

    # categories --------------------------------------------------------------------------------

    async def list_categories(self, *, limit: int, cursor: str | None) -> CategoryPage:
        """A page of categories, by slug."""
        after = None
        if cursor is not None:
            (after,) = decode_cursor(cursor, 1)
            # Only a slug is a cursor this API issued; anything else is refused, never looked up.
            if not isinstance(after, str) or not _SLUG.fullmatch(after):
                raise InvalidCursor()
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
            raise _unknown("parent_id", "category") from exc
        stale = Stale()
        stale.categories()
        await self._invalidate(stale)
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
            raise _unknown("parent_id", "category") from exc
        stale.categories()
        if chains:
            stale.listings(chains)
            stale.stock(chains)
        await self._invalidate(stale)
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
        await self._invalidate(stale)

    # products ----------------------------------------------------------------------------------

    async def get(self, product_id: uuid.UUID) -> Product:
        """The product with this id, or ``ProductNotFound``."""
        product: Product | None = await self._read(
            lambda: self._cached_product(product_id),
            lambda: self.repository.get_product(product_id),
        )
        if product is None:
            raise ProductNotFound("No such product")
        return product

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
        if min_price is not None and max_price is not None and min_price > max_price:
            raise ValidationFailed(
                [
                    {
                        "loc": ["query", "max_price"],
                        "msg": "max_price must not be below min_price",
                        "type": "range_inverted",
                    }
                ]
            )
        effective: SortName = sort or ("rank" if q else "-created_at")  # type: ignore[assignment]
        query = ListingQuery(
            sort=effective,
            limit=limit + 1,
            category_id=category_id,
            q=q,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock,
            after=_decode_after(cursor, effective) if cursor is not None else None,
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
            raise _unknown("category_id", "category") from exc
        stale = Stale()
        stale.product(product.id)
        stale.listings(chain)
        await self._invalidate(stale)
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
            raise _unknown("category_id", "category") from exc
        stale.product(product_id)
        await self._invalidate(stale)
        return after

    async def delete(self, product_id: uuid.UUID) -> None:
        """Delete a product and its inventory; refused while orders hold reserved stock."""
        stale = Stale()
        async with self.repository.transaction() as conn:
            await self.repository.lock_tree(conn)
            product = await self.repository.lock_product(product_id, conn)
            if product is None:
                raise ProductNotFound("No such product")
            stock = await self.repository.lock_inventory([product_id], conn)
            if product_id in stock and stock[product_id].reserved > 0:
                raise ProductReserved(
                    f"{stock[product_id].reserved} units are reserved by orders; "
                    "release or ship them first"
                )
            await self.repository.delete_product(product_id, conn)
            stale.listings(await self.repository.category_chains([product.category_id], conn))
            await self.outbox.publish(conn, ProductDeleted(product_id=product_id, sku=product.sku))
        stale.product(product_id)
        await self._invalidate(stale)

    # inventory ---------------------------------------------------------------------------------

    async def inventory(self, product_id: uuid.UUID) -> Inventory:
        """The stock of a product, or ``ProductNotFound``."""
        inventory: Inventory | None = await self._read(
            lambda: self._cached_inventory(product_id),
            lambda: self.repository.get_inventory(product_id),
        )
        if inventory is None:
            raise ProductNotFound("No such product")
        return inventory

    async def set_on_hand(self, product_id: uuid.UUID, on_hand: int) -> Inventory:
        """Set the units on hand; ``StockBelowReserved`` below what orders have reserved."""
        stale = Stale()
        async with self.repository.transaction() as conn:
            await self.repository.lock_tree(conn)
            stock = await self.repository.lock_inventory([product_id], conn)
            before = stock.get(product_id)
            if before is None:
                raise ProductNotFound("No such product")
            if on_hand < before.reserved:
                raise StockBelowReserved(
                    f"on_hand cannot be below the {before.reserved} units reserved by orders"
                )
            if on_hand == before.on_hand:
                return before
            after = await self.repository.set_on_hand(product_id, on_hand, conn)
            await self.outbox.publish(conn, _changed(after, "set"))
            stale.product(product_id)
            if _crossed_zero(before, after):
                await self._stale_stock(stale, [product_id], conn)
        await self._invalidate(stale)
        return after

    async def _stale_stock(
        self, stale: Stale, product_ids: list[uuid.UUID], conn: Connection
    ) -> None:
        categories = await self.repository.categories_of(product_ids, conn)
        stale.stock(await self.repository.category_chains(categories, conn))

    # reservations ------------------------------------------------------------------------------

    async def reserve(
        self, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]
    ) -> ReservationOutcome:
        """Reserve every line of an order, or none (see the module docstring)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.reserve_in(conn, order_id, lines)
        await self._invalidate(stale)
        return outcome

    async def release(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Give back an order's reserved stock (an order cancelled)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.release_in(conn, order_id)
        await self._invalidate(stale)
        return outcome

    async def commit(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Take an order's reserved stock off the shelf (an order shipped)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.commit_in(conn, order_id)
        await self._invalidate(stale)
        return outcome

    async def reserve_in(
        self, conn: Connection, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]
    ) -> tuple[ReservationOutcome, Stale]:
        """``reserve`` inside the caller's transaction; pass the ``Stale`` to ``invalidate``
        once it has committed.

        An order seen before changes nothing and publishes its outcome again: reserved (or
        since committed) → ``inventory.reserved``, failed → ``inventory.reservation_failed``,
        released → ``inventory.released``.
        """
        wanted = merge_lines(lines)
        stale = Stale()
        await self.repository.lock_tree(conn)
        if not await self.repository.claim_reservation(order_id, "reserved", conn):
            existing = await self.repository.lock_reservation(order_id, conn)
            assert existing is not None  # claimed by a committed transaction
            return await self._replay_reservation(conn, existing), stale
        stock = await self.repository.lock_inventory(wanted, conn)
        missing = sorted(set(wanted) - set(stock))
        short = sorted(
            pid for pid, qty in wanted.items() if pid in stock and stock[pid].available < qty
        )
        if missing or short:
            reason: Literal["out_of_stock", "unknown_product"] = (
                "unknown_product" if missing else "out_of_stock"
            )
            product_ids = missing or short
            await self.repository.set_reservation(
                order_id, "failed", conn, reason=reason, product_ids=product_ids
            )
            await self.outbox.publish(
                conn,
                InventoryReservationFailed(
                    order_id=order_id, reason=reason, product_ids=product_ids
                ),
            )
            outcome = ReservationOutcome(
                order_id, "failed", changed=True, reason=reason, product_ids=product_ids
            )
            return outcome, stale
        after = await self.repository.adjust(wanted, conn, reserved=1)
        await self.repository.record_lines(order_id, wanted, conn)
        await self.outbox.publish(conn, InventoryReserved(order_id=order_id, items=_items(wanted)))
        await self._publish_changes(conn, stale, stock, after, "reserved", order_id)
        return ReservationOutcome(order_id, "reserved", changed=True, items=wanted), stale

    async def release_in(
        self, conn: Connection, order_id: uuid.UUID
    ) -> tuple[ReservationOutcome, Stale]:
        """``release`` inside the caller's transaction (see ``reserve_in``).

        Answers ``inventory.released`` every time (``items`` empty when the order held nothing).
        A release of an order not seen yet leaves a tombstone: its late ``order.placed`` then
        reserves nothing. A shipped order keeps its stock committed and publishes nothing.
        """
        stale = Stale()
        await self.repository.lock_tree(conn)
        if await self.repository.claim_reservation(order_id, "released", conn):
            await self.outbox.publish(conn, InventoryReleased(order_id=order_id, items=[]))
            return ReservationOutcome(order_id, "released", changed=True), stale
        existing = await self.repository.lock_reservation(order_id, conn)
        assert existing is not None
        if existing.status == "committed":
            log.warning("order %s was shipped; its stock cannot be released", order_id)
            return ReservationOutcome(order_id, "committed", False, items=existing.lines), stale
        if existing.status != "reserved":
            held = existing.lines if existing.status == "released" else {}
            await self.outbox.publish(
                conn, InventoryReleased(order_id=order_id, items=_items(held))
            )
            return (
                ReservationOutcome(
                    order_id,
                    existing.status,
                    changed=False,
                    reason=existing.reason,
                    product_ids=existing.product_ids,
                    items=held,
                ),
                stale,
            )
        stock = await self.repository.lock_inventory(existing.lines, conn)
        after = await self.repository.adjust(existing.lines, conn, reserved=-1)
        await self.repository.set_reservation(order_id, "released", conn)
        await self.outbox.publish(
            conn, InventoryReleased(order_id=order_id, items=_items(existing.lines))
        )
        await self._publish_changes(conn, stale, stock, after, "released", order_id)
        return ReservationOutcome(order_id, "released", True, items=existing.lines), stale

    async def commit_in(
        self, conn: Connection, order_id: uuid.UUID
    ) -> tuple[ReservationOutcome, Stale]:
        """``commit`` inside the caller's transaction (see ``reserve_in``): a reserved order's
        lines leave ``on_hand`` and ``reserved`` together; anything else changes nothing."""
        stale = Stale()
        await self.repository.lock_tree(conn)
        existing = await self.repository.lock_reservation(order_id, conn)
        if existing is None:
            log.warning("order %s shipped, but no reservation of it is known", order_id)
            return ReservationOutcome(order_id, "unknown", changed=False), stale
        if existing.status != "reserved":
            if existing.status != "committed":
                log.warning(
                    "order %s shipped, but its reservation is %s", order_id, existing.status
                )
            return (
                ReservationOutcome(order_id, existing.status, False, items=existing.lines),
                stale,
            )
        stock = await self.repository.lock_inventory(existing.lines, conn)
        after = await self.repository.adjust(existing.lines, conn, reserved=-1, on_hand=-1)
        await self.repository.set_reservation(order_id, "committed", conn)
        await self._publish_changes(conn, stale, stock, after, "committed", order_id)
        return ReservationOutcome(order_id, "committed", True, items=existing.lines), stale

    async def _replay_reservation(
        self, conn: Connection, existing: Reservation
    ) -> ReservationOutcome:
        order_id = existing.order_id
        event: Event
        if existing.status == "failed":
            event = InventoryReservationFailed(
                order_id=order_id,
                reason=existing.reason,
                product_ids=existing.product_ids,
            )
        elif existing.status == "released":
            event = InventoryReleased(order_id=order_id, items=_items(existing.lines))
        else:
            event = InventoryReserved(order_id=order_id, items=_items(existing.lines))
        await self.outbox.publish(conn, event)
        return ReservationOutcome(
            order_id,
            existing.status,
            changed=False,
            reason=existing.reason,
            product_ids=existing.product_ids,
            items=existing.lines,
        )

    async def _publish_changes(
        self,
        conn: Connection,
        stale: Stale,
        before: Mapping[uuid.UUID, Inventory],
        after: list[Inventory],
        reason: Literal["reserved", "released", "committed"],
        order_id: uuid.UUID,
    ) -> None:
        crossed = []
        for inventory in after:
            await self.outbox.publish(conn, _changed(inventory, reason, order_id))
            stale.product(inventory.product_id)
            if _crossed_zero(before[inventory.product_id], inventory):
                crossed.append(inventory.product_id)
        if crossed:
            await self._stale_stock(stale, crossed, conn)


def _changed(
    inventory: Inventory,
    reason: Literal["set", "reserved", "released", "committed"],
    order_id: uuid.UUID | None = None,
) -> InventoryChanged:
    return InventoryChanged(
        product_id=inventory.product_id,
        on_hand=inventory.on_hand,
        reserved=inventory.reserved,
        available=inventory.available,
        reason=reason,
        order_id=order_id,
    )
