"""The products service's pure rules, without a server: cursors, stale tags, order lines."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from core.pagination import InvalidCursor, encode_cursor
from services.products.repository import ListingQuery, SortKey, SortName
from services.products.service import Stale, listing_tags
from services.products.service.inventory import merge_lines
from services.products.service.listing import category_after, decode_after, encode_after

pytestmark = pytest.mark.unit

ID = uuid.UUID(int=7)


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("price", 1999),
        ("-price", 0),
        ("name", "Walnut lamp"),
        ("-created_at", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("rank", 0.25),
    ],
)
def test_a_listing_cursor_names_the_row_it_was_made_from(sort: SortName, value: object) -> None:
    assert decode_after(encode_after(sort, value, ID), sort) == SortKey(value, ID)


@pytest.mark.parametrize(
    "cursor",
    [
        encode_after("price", 100, ID),  # issued for another sort
        encode_cursor("name", 100, str(ID)),  # a name that is not text
        encode_cursor("name", "a", "not-a-uuid"),
        encode_cursor("name", "a"),  # too short
        "not a cursor",
    ],
)
def test_a_listing_cursor_of_another_sort_or_shape_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_after(cursor, "name")


def test_a_cursor_with_a_naive_time_or_an_endless_rank_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        decode_after(encode_cursor("-created_at", "2024-05-01T12:30:00", str(ID)), "-created_at")
    with pytest.raises(InvalidCursor):
        decode_after(encode_cursor("rank", True, str(ID)), "rank")


def test_a_category_cursor_is_a_slug_and_nothing_else() -> None:
    assert category_after(encode_cursor("kitchen-tools")) == "kitchen-tools"
    for forged in (encode_cursor("None "), encode_cursor(None), encode_cursor("Upper")):
        with pytest.raises(InvalidCursor):
            category_after(forged)


def test_a_listing_page_is_tagged_by_its_scope_and_by_stock_only_when_it_filters_on_it() -> None:
    everything = ListingQuery(sort="price", limit=21)
    assert listing_tags(everything) == ["catalog", "listings:all"]
    in_category = ListingQuery(sort="price", limit=21, category_id=ID, in_stock=False)
    assert listing_tags(in_category) == [
        "catalog",
        f"listings:category:{ID}",
        f"stock:category:{ID}",
    ]


def test_stale_collects_the_tags_of_a_write() -> None:
    stale = Stale()
    stale.product(ID)
    stale.listings([ID])
    stale.stock([])
    stale.categories()
    assert stale.tags == {
        f"product:{ID}",
        "listings:all",
        f"listings:category:{ID}",
        "stock:all",
        "categories",
    }


def test_order_lines_are_merged_by_product_and_must_be_positive() -> None:
    other = uuid.UUID(int=8)
    assert merge_lines([(ID, 2), (other, 1), (ID, 3)]) == {ID: 5, other: 1}
    with pytest.raises(ValueError, match="positive"):
        merge_lines([(ID, 0)])
    with pytest.raises(ValueError, match="at least one line"):
        merge_lines([])


def test_a_listing_key_is_the_same_for_an_id_read_from_the_database() -> None:
    # The cache warm-up lists each category by the id its row gave: asyncpg's UUID type.
    from asyncpg.pgproto.pgproto import UUID as PgUUID

    from services.products.service.listing import listing_key

    category = uuid.uuid4()
    from_request = ListingQuery(sort="name", limit=20, category_id=category)
    from_database = ListingQuery(sort="name", limit=20, category_id=PgUUID(str(category)))
    assert listing_key(from_database) == listing_key(from_request)
    assert listing_key(ListingQuery(sort="name", limit=20, category_id=uuid.uuid4())) != (
        listing_key(from_request)
    )
