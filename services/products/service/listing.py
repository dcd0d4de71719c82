"""Pages of the catalog: what a page holds, its cursor, and the cache key of a listing page.

A cursor names the last row of its page for one sort (``(sort, value, id)``, opaque to
clients); a cursor of another sort, or one that does not decode, is ``InvalidCursor``.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from core.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.products.models import Category, Product
from services.products.repository import ListingQuery, SortKey, SortName

__all__ = [
    "CategoryPage",
    "IdPage",
    "ProductPage",
    "category_after",
    "decode_after",
    "encode_after",
    "listing_key",
]

_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # the pattern of services.products.schemas.Slug


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


def listing_key(query: ListingQuery) -> str:
    """The cache key of a listing page: a digest of everything that selects its rows.

    ``default=str``: ids read from the database are asyncpg's own UUID type, which orjson does
    not take as a ``uuid.UUID``; their text is the same, and so is the key."""
    digest = hashlib.sha256(
        orjson.dumps(query, default=str, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return f"products:page:{digest[:40]}"


def decode_after(cursor: str, sort: SortName) -> SortKey:
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


def encode_after(sort: SortName, value: Any, last_id: uuid.UUID) -> str:
    """The cursor of the page after the row ``(value, last_id)`` in ``sort`` order."""
    if isinstance(value, datetime):
        value = value.isoformat()
    return encode_cursor(sort, value, str(last_id))


def category_after(cursor: str) -> str:
    """The slug a category cursor names (the list is by slug)."""
    (after,) = decode_cursor(cursor, 1)
    # Only a slug is a cursor this API issued; anything else is refused, never looked up.
    if not isinstance(after, str) or not _SLUG.fullmatch(after):
        raise InvalidCursor()
    return after
