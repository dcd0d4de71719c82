"""The contract of ``EventArchive``, run against every backend that is reachable: PostgreSQL
always, MongoDB where ``MONGODB_URL`` is set (skipped here, saying why)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from core.archive import EventArchive, InvalidCursor
from tests.core.archive.conftest import T0, at, envelope


def _ids(items: list[dict[str, Any]]) -> list[Any]:
    return [item["id"] for item in items]


def _order(item: dict[str, Any]) -> tuple[datetime, str]:
    """The archive's order: time (not its text, which sorts ``03Z`` after ``03.000001Z``), then
    event id."""
    return datetime.fromisoformat(item["occurred_at"]), item["id"]


async def test_store_is_idempotent_by_event_id(archive: EventArchive) -> None:
    first = [envelope(at=at(i)) for i in range(3)]
    assert await archive.store(first) == 3
    extra = envelope(at=at(10))
    assert await archive.store([*first, extra, extra]) == 1
    assert await archive.store(first) == 0
    assert await archive.store([]) == 0
    page = await archive.query()
    assert _ids(page.items) == _ids([*first, extra])
    assert page.next_cursor is None


async def test_envelopes_come_back_as_stored_oldest_first(archive: EventArchive) -> None:
    stored = [envelope(at=at(s), n=s) for s in (5, 1, 3.000001, 3, 0.5)]
    await archive.store(stored)
    page = await archive.query()
    expected = sorted(stored, key=_order)
    assert page.items == expected  # every field, data included, exactly as on the bus


async def test_filters_by_correlation_id_type_and_since(archive: EventArchive) -> None:
    flow = uuid.uuid4().hex
    ours = [
        envelope("order.placed", at=at(1), correlation_id=flow),
        envelope("inventory.reserved", at=at(2), correlation_id=flow),
        envelope("order.confirmed", at=at(3), correlation_id=flow),
    ]
    others = [envelope("order.placed", at=at(2)), envelope("user.registered", at=at(4))]
    await archive.store([*others, *ours])

    assert _ids((await archive.query(correlation_id=flow)).items) == _ids(ours)
    placed = await archive.query(type="order.placed")
    assert _ids(placed.items) == _ids([ours[0], others[0]])
    assert _ids((await archive.query(since=at(2))).items) == _ids(
        sorted([ours[1], others[0], ours[2], others[1]], key=_order)
    )
    both = await archive.query(correlation_id=flow, type="order.confirmed", since=at(2))
    assert _ids(both.items) == _ids([ours[2]])
    assert (await archive.query(correlation_id="nobody")).items == []


async def test_keyset_pages_cross_equal_timestamps_without_loss_or_repeat(
    archive: EventArchive,
) -> None:
    same_time = [envelope(at=at(1)) for _ in range(7)]
    await archive.store([envelope(at=at(0)), *same_time, envelope(at=at(2))])
    seen: list[object] = []
    cursor = None
    pages = 0
    while True:
        page = await archive.query(cursor=cursor, limit=3)
        seen += _ids(page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == 9
    assert len(set(seen)) == 9
    assert seen[1:8] == sorted(_ids(same_time))  # ties broken by event id


async def test_pages_of_a_filtered_query_keep_the_filter(archive: EventArchive) -> None:
    flow = uuid.uuid4().hex
    ours = [envelope(at=at(i % 2), correlation_id=flow) for i in range(5)]
    await archive.store([*ours, *(envelope(at=at(1)) for _ in range(5))])
    first = await archive.query(correlation_id=flow, limit=4)
    assert first.next_cursor is not None
    rest = await archive.query(correlation_id=flow, limit=4, cursor=first.next_cursor)
    assert rest.next_cursor is None
    expected = sorted(ours, key=_order)
    assert _ids(first.items + rest.items) == _ids(expected)


async def test_a_full_last_page_has_no_next_cursor(archive: EventArchive) -> None:
    await archive.store([envelope(at=at(i)) for i in range(4)])
    page = await archive.query(limit=4)
    assert len(page.items) == 4
    assert page.next_cursor is None


async def test_purge_deletes_only_older_envelopes(archive: EventArchive) -> None:
    old = [envelope(at=T0 - timedelta(days=8, seconds=i)) for i in range(3)]
    recent = [envelope(at=at(i)) for i in range(2)]
    await archive.store([*old, *recent])
    assert await archive.purge(T0 - timedelta(days=7)) == 3
    assert _ids((await archive.query()).items) == _ids(recent)
    assert await archive.purge(T0 - timedelta(days=7)) == 0
    assert await archive.purge(at(1)) == 1  # strictly older than: at(1) itself stays
    assert _ids((await archive.query()).items) == _ids(recent[1:])


async def test_bad_arguments_are_refused(archive: EventArchive) -> None:
    await archive.store([envelope(at=at(i)) for i in range(3)])
    with pytest.raises(InvalidCursor):
        await archive.query(cursor="not a cursor")
    with pytest.raises(InvalidCursor):
        await archive.query(cursor="WyJ4IiwieSJd")  # ["x","y"]: a list, but not a key
    with pytest.raises(ValueError, match="timezone"):
        await archive.query(since=T0.replace(tzinfo=None))
    for limit in (0, 1001):
        with pytest.raises(ValueError, match="limit"):
            await archive.query(limit=limit)
    with pytest.raises(ValueError, match="source"):
        await archive.store([{"type": "order.placed", "data": {}}])  # no source
    assert len((await archive.query()).items) == 3  # nothing of a refused call was kept


async def test_filters_by_data_fields(archive: EventArchive) -> None:
    order = uuid.uuid4().hex
    ours = [
        envelope("order.placed", at=at(2), order_id=order, n=1),
        envelope("order.confirmed", at=at(3), order_id=order, n=2),
    ]
    others = [
        envelope("order.placed", at=at(1), order_id=uuid.uuid4().hex, n=1),
        envelope("order.placed", at=at(4), n="1"),
        envelope("order.placed", at=at(5), order_id=order + "x", n=True),
        envelope("order.placed", at=at(6), nested={"order_id": order}),
    ]
    await archive.store([*others, *ours])

    assert _ids((await archive.query(data={"order_id": order})).items) == _ids(ours)
    placed = await archive.query(type="order.placed", data={"order_id": order})
    assert _ids(placed.items) == _ids(ours[:1])
    assert _ids((await archive.query(data={"order_id": order, "n": 2})).items) == _ids(ours[1:])
    # Equality keeps the JSON type: 1, "1" and true are three values.
    assert _ids((await archive.query(data={"n": 1})).items) == _ids([others[0], ours[0]])
    assert _ids((await archive.query(data={"n": "1"})).items) == _ids(others[1:2])
    assert _ids((await archive.query(data={"n": True})).items) == _ids(others[2:3])
    assert (await archive.query(data={"order_id": "nobody"})).items == []
    first = await archive.query(data={"order_id": order}, limit=1)
    assert first.next_cursor is not None
    rest = await archive.query(data={"order_id": order}, limit=1, cursor=first.next_cursor)
    assert _ids(first.items + rest.items) == _ids(ours)
    assert rest.next_cursor is None


@pytest.mark.parametrize(
    "data", [{"nested.order_id": "x"}, {"$where": "1"}, {"": "x"}, {"n": 1.5}, {"n": None}]
)
async def test_a_data_filter_names_plain_fields_and_scalar_values(
    archive: EventArchive, data: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="data filter"):
        await archive.query(data=data)
