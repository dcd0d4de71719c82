"""Rules of the inventory: each product's stock and the order saga's reservations.

Reservations are keyed by order id (see ``services.products.events``). Each runs in one
transaction that first takes the category-tree lock shared and claims the order's
``reservations`` row, in one statement (``INSERT ... ON CONFLICT DO NOTHING``: a concurrent
attempt for the same order waits for the first and then replays its outcome), then locks the
inventory rows in ascending product id (``FOR UPDATE``), checks every line, and either adjusts
all of them or none. The table's CHECK (``0 <= reserved <= on_hand``) backs this up. Outcome
events go through the outbox in the same transaction.

A stock change makes its product's cache entries stale, and, when availability crosses zero,
the ``in_stock`` listings of its categories (read from ``catalog``; see
``services.products.service.caching``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.bus import Event, Outbox
from core.cache import Cache, cached
from core.db import Connection
from services.products.events import (
    InventoryChanged,
    InventoryReleased,
    InventoryReservationFailed,
    InventoryReserved,
    ReservedItem,
)
from services.products.models import Inventory, Reservation
from services.products.repository import CatalogRepository, InventoryRepository
from services.products.service.caching import NOT_FOUND_TTL, PRODUCT_TTL, Stale, invalidate
from services.products.service.errors import ProductNotFound, StockBelowReserved

__all__ = ["InventoryService", "ReservationOutcome", "merge_lines"]

log = logging.getLogger("services.products")


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


class InventoryService:
    """Stock and reservations; reads cached in ``cache`` unless it is ``None``.

    ``catalog`` is read for the category tree: its lock, and the categories of a product whose
    availability crossed zero.
    """

    def __init__(
        self,
        repository: InventoryRepository,
        catalog: CatalogRepository,
        *,
        outbox: Outbox,
        cache: Cache | None,
    ) -> None:
        self.repository = repository
        self.catalog = catalog
        self.outbox = outbox
        self.cache = cache

    # stock -------------------------------------------------------------------------------------

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

    async def get(self, product_id: uuid.UUID) -> Inventory:
        """The stock of a product, or ``ProductNotFound``."""
        inventory = (
            await self._cached_inventory(product_id)
            if self.cache is not None
            else await self.repository.get_inventory(product_id)
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
        await invalidate(self.cache, stale)
        return after

    async def _stale_stock(
        self, stale: Stale, product_ids: list[uuid.UUID], conn: Connection
    ) -> None:
        categories = await self.catalog.categories_of(product_ids, conn)
        stale.stock(await self.catalog.category_chains(categories, conn))

    # reservations ------------------------------------------------------------------------------

    async def reserve(
        self, order_id: uuid.UUID, lines: Iterable[tuple[uuid.UUID, int]]
    ) -> ReservationOutcome:
        """Reserve every line of an order, or none (see the module docstring)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.reserve_in(conn, order_id, lines)
        await invalidate(self.cache, stale)
        return outcome

    async def release(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Give back an order's reserved stock (an order cancelled)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.release_in(conn, order_id)
        await invalidate(self.cache, stale)
        return outcome

    async def commit(self, order_id: uuid.UUID) -> ReservationOutcome:
        """Take an order's reserved stock off the shelf (an order shipped)."""
        async with self.repository.transaction() as conn:
            outcome, stale = await self.commit_in(conn, order_id)
        await invalidate(self.cache, stale)
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
        after = await self.repository.reserve_lines(order_id, wanted, conn)
        reserved = InventoryReserved(order_id=order_id, items=_items(wanted))
        await self._publish_changes(conn, stale, stock, after, "reserved", order_id, reserved)
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
        released = InventoryReleased(order_id=order_id, items=_items(existing.lines))
        await self._publish_changes(conn, stale, stock, after, "released", order_id, released)
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
        answer: Event | None = None,
    ) -> None:
        """Record ``answer`` (the order's outcome, if any) then an ``inventory.changed`` per
        product, all in one outbox statement, and mark what the change made stale."""
        events: list[Event] = [answer] if answer is not None else []
        crossed = []
        for inventory in after:
            events.append(_changed(inventory, reason, order_id))
            stale.product(inventory.product_id)
            if _crossed_zero(before[inventory.product_id], inventory):
                crossed.append(inventory.product_id)
        await self.outbox.publish_many(conn, events)
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
