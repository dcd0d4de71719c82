"""The statement of one page of ``GET /products``: filters, sort, keyset and limit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ListingQuery", "SortKey", "SortName"]

SortName = Literal["price", "-price", "name", "-created_at", "rank"]

# Sort name -> (key expression, descending)
_SORTS: dict[str, tuple[str, bool]] = {
    "price": ("p.price_cents", False),
    "-price": ("p.price_cents", True),
    "name": ("p.name", False),
    "-created_at": ("p.created_at", True),
    "rank": ("ts_rank(p.search, websearch_to_tsquery('english', {q}))", True),
}


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
