"""The orders store stays single-shard when it is distributed as Citus would distribute it.

Proved on plain PostgreSQL: in a database of its own with the orders migrations applied, each
distributed table (``services.orders.repository.distribution``) is recreated ``PARTITION BY HASH``
of its distribution column with ``SHARDS`` partitions, which stand for Citus's shards. Recreating
a table whose primary or unique key lacks that column fails, as ``create_distributed_table``
does: the first proof. Then a full order lifecycle runs through the real services (placement
with an idempotency key, the saga to confirmed, a cancellation and its refund, a decline, a
shipment, reads by id and by user, a replay of the projection) while every statement of the
orders database is logged; each statement on a distributed table is explained with its own
arguments, and must touch at most one partition of each table (colocated tables: the same one),
and each INSERT into one must name its distribution column (and an upsert's DO UPDATE SET
call no function that is not immutable, nor an UPDATE a volatile one: Citus refuses them, and
partitions would not show it; those it would refuse today are listed in ``CITUS_REFUSES``). The
statements that span shards by nature are listed in ``MULTI_SHARD`` with their reason; any other
fails the test.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from asyncpg.connection import LoggedQuery
from redis.asyncio import Redis

import core.db
import migrations
from core.db import create_pool
from services.orders import Settings
from services.orders.repository import OrdersRepository
from services.orders.repository.distribution import COLOCATION, DISTRIBUTION
from tests.services.orders.conftest import ServicesFactory, new_shop
from tests.services.orders.helpers import ORDERS, order_body, order_path

SHARDS = 4

# Statements that read or write every shard (or several), by a fragment of their text (blanks
# collapsed), and why that is right.
MULTI_SHARD: dict[str, str] = {
    "FROM order_views WHERE ($1::uuid IS NULL OR user_id = $1)": (
        "GET /orders: a customer's (or everyone's) orders newest first; every shard in parallel,"
        " top-N per shard merged by the coordinator (next: a per-customer view by user_id)"
    ),
    "FROM order_views GROUP BY status, currency": "the dashboard's figures over all orders",
    "FROM order_sagas WHERE step <> 'done'": "figures: unfinished sagas counted on every shard",
    "SELECT step, count(*) AS n FROM order_sagas GROUP BY step": "figures: sagas by step",
    "SELECT order_id FROM order_sagas WHERE step = $1 AND deadline < clock_timestamp()": (
        "the saga runner's poll for passed deadlines (then each order is handled by its id)"
    ),
    "WITH due AS ( SELECT order_id FROM order_sagas WHERE step = $1": (
        "the saga runner's poll leasing due steps; Citus locks rows (FOR UPDATE) only in"
        " single-shard queries: it must become per shard before the move (docs/scaling.md)"
    ),
    "UPDATE order_sagas SET lease_until = clock_timestamp() + make_interval(secs => $2)"
    " WHERE order_id = ANY($1::uuid[])": (
        "the lease heartbeat of this instance's steps: the shards of those orders only"
    ),
    "CREATE TEMP TABLE live_views": "a replay check copies the read model: every shard",
    "FROM live_views EXCEPT": "a replay check compares the read model: every shard",
}
# The same, for whole statements (as fragments, they would cover per-order statements too).
MULTI_SHARD_STATEMENTS: dict[str, str] = {
    "LOCK TABLE order_views IN EXCLUSIVE MODE": "a rebuild of the read model: every shard",
    "DELETE FROM order_views": "a rebuild empties the read model: every shard",
}

# Statements that Citus would refuse for a volatile function in an UPDATE of a distributed
# table, by a fragment of their text, to change before the move (docs/scaling.md, "Before the
# move"); any other such statement fails the test, and so does an entry that no longer applies.
CITUS_REFUSES: dict[str, str] = {
    "), stepped AS (UPDATE order_sagas SET step =": (
        "the statement that appends, projects and moves the saga: its step's SET list"
        " (step_assignments) takes the lease with clock_timestamp()"
    ),
    "UPDATE order_sagas SET step = $2::text": "set_step: the same SET list",
}
_VOLATILE_UPDATE = "a volatile function in an UPDATE of"

_TABLES = re.compile(r"\b(" + "|".join(DISTRIBUTION) + r")\b")
_INSERT = re.compile(r"INSERT INTO\s+(\w+)\s*\(([^)]*)\)", re.IGNORECASE)
_DML = ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE")
# An upsert's DO UPDATE SET list (up to RETURNING, WHERE, or the end of its CTE).
_UPSERT_SET = re.compile(
    r"DO UPDATE SET (.*?)(?: RETURNING | WHERE |\)\s*,\s*\w+\s+AS\s*\(|\)\s*SELECT |$)"
)
# Functions that are not immutable, which Citus refuses in DO UPDATE SET.
_MUTABLE = re.compile(
    r"\b(now|clock_timestamp|statement_timestamp|transaction_timestamp|random"
    r"|gen_random_uuid)\s*\(|\bcurrent_timestamp\b",
    re.IGNORECASE,
)


def normalized(query: str) -> str:
    """``query`` with its blanks collapsed (and none inside parentheses' edges)."""
    text = " ".join(query.split())
    return text.replace("( ", "(").replace(" )", ")")


def known_multi_shard(query: str) -> str | None:
    """The ``MULTI_SHARD`` fragment or ``MULTI_SHARD_STATEMENTS`` entry that ``query`` is."""
    text = normalized(query)
    if text in MULTI_SHARD_STATEMENTS:
        return text
    return next((f for f in MULTI_SHARD if normalized(f) in text), None)


# Volatile functions, which Citus refuses anywhere in an UPDATE of a distributed table.
_VOLATILE = re.compile(r"\b(clock_timestamp|random|gen_random_uuid|timeofday)\s*\(", re.I)
# An UPDATE's table and the rest of it (up to the end of its CTE or of the statement).
_UPDATE = re.compile(r"\bUPDATE (\w+)(?: \w+)? SET (.*?)(?:\)\s*,\s*\w+\s+AS\s*\(|\)\s*SELECT |$)")


def citus_refusal(query: str) -> str | None:
    """The ``CITUS_REFUSES`` fragment that ``query`` is, if any."""
    text = normalized(query)
    return next((f for f in CITUS_REFUSES if normalized(f) in text), None)


async def distribute(conn: asyncpg.Connection, table: str, column: str) -> None:
    """Recreate ``table`` hash-partitioned by ``column`` (``SHARDS`` partitions named
    ``<table>_shard<i>``), with its columns, defaults, constraints and indexes; it must be empty."""
    hashed = f"{table}__hashed"
    async with conn.transaction():
        await conn.execute(
            f"CREATE TABLE {hashed} (LIKE {table} INCLUDING ALL) PARTITION BY HASH ({column})"
        )
        for i in range(SHARDS):
            await conn.execute(
                f"CREATE TABLE {table}_shard{i} PARTITION OF {hashed}"
                f" FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {i})"
            )
        for name in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0",
            table,
        ):
            sequence = await conn.fetchval(
                "SELECT pg_get_serial_sequence($1, $2)", table, name["attname"]
            )
            if sequence is not None:  # keep it: dropping the table would drop what it owns
                await conn.execute(f"ALTER SEQUENCE {sequence} OWNED BY {hashed}.{name['attname']}")
        await conn.execute(f"DROP TABLE {table}")
        await conn.execute(f"ALTER TABLE {hashed} RENAME TO {table}")


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    # Pruning with the statement's arguments at plan time, as Citus's router planner does.
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    return conn


async def _distribute_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for table, column in DISTRIBUTION.items():
            await distribute(conn, table, column)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sharded_dsn(throwaway_database: Callable[[str, Any], str]) -> str:
    """A migrated orders database whose distributed tables are hash-partitioned."""
    dsn = throwaway_database("orders_sharded", migrations.location("orders"))
    asyncio.run(_distribute_all(dsn))
    return dsn


@pytest.fixture
async def sharded_db(sharded_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to it, with the services' JSON codecs and custom plans."""
    conn = await _connect(sharded_dsn)
    yield conn
    await conn.close()


def _relations(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            yield plan["Relation Name"]
        for value in plan.values():
            yield from _relations(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _relations(item)


async def problems_of(conn: asyncpg.Connection, query: str, args: tuple[Any, ...]) -> list[str]:
    """Why ``query`` with ``args`` is not single-shard (empty: it is, or it names no distributed
    table). Explained on ``conn``; nothing is executed."""
    tables = set(_TABLES.findall(query))
    if not tables:
        return []
    if not query.lstrip().upper().startswith(_DML):
        return [f"not a single-shard statement on {sorted(tables)}"]
    problems = []
    for target, columns in _INSERT.findall(query):
        key = DISTRIBUTION.get(target)
        if key is not None and key not in {c.strip() for c in columns.split(",")}:
            problems.append(f"INSERT INTO {target} without its distribution column {key}")
    for assignments in _UPSERT_SET.findall(normalized(query)):
        if _MUTABLE.search(assignments):
            problems.append(f"a function that is not immutable in DO UPDATE SET {assignments}")
    for table, rest in _UPDATE.findall(normalized(query)):
        if table in DISTRIBUTION and _VOLATILE.search(rest):
            problems.append(f"{_VOLATILE_UPDATE} {table}")
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    shards: dict[str, set[int]] = {}
    for relation in _relations(plan):
        table, _, shard = relation.rpartition("_shard")
        if table in DISTRIBUTION and shard.isdigit():
            shards.setdefault(table, set()).add(int(shard))
    for table, touched in sorted(shards.items()):
        if len(touched) > 1:
            problems.append(f"{table}: {len(touched)} shards")
    for group in COLOCATION:
        touched = set().union(*(shards.get(t, set()) for t in group))
        if len(touched) > 1 and all(len(shards.get(t, set())) <= 1 for t in group):
            problems.append(f"colocated tables {group} on different shards {sorted(touched)}")
    return problems


async def shard_of(conn: asyncpg.Connection, order_id: uuid.UUID) -> int:
    """The shard of the order group that holds ``order_id``."""
    plan = await conn.fetchval(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM order_sagas WHERE order_id = $1", order_id
    )
    (relation,) = _relations(plan)
    return int(relation.rpartition("_shard")[2])


async def test_a_key_without_the_distribution_column_cannot_be_distributed(
    sharded_db: asyncpg.Connection,
) -> None:
    """The keys of migration 0001 (before 0006): ``order_events`` keyed by ``position``,
    ``payments`` with a standalone unique ``payment_id``."""
    before = {
        "events_0001": "position bigserial PRIMARY KEY, order_id uuid NOT NULL, seq integer,"
        " UNIQUE (order_id, seq)",
        "payments_0001": "order_id uuid PRIMARY KEY, payment_id uuid NOT NULL UNIQUE",
    }
    for table, columns in before.items():
        tx = sharded_db.transaction()
        await tx.start()
        try:
            await sharded_db.execute(f"CREATE TABLE {table} ({columns})")
            with pytest.raises(asyncpg.PostgresError, match="must include all partitioning"):
                await distribute(sharded_db, table, "order_id")
        finally:
            await tx.rollback()


async def test_a_query_without_the_distribution_key_is_reported(
    sharded_db: asyncpg.Connection,
) -> None:
    order_id = uuid.uuid4()

    by_token = await problems_of(
        sharded_db, "SELECT order_id FROM order_sagas WHERE payment_token = $1", ("tok_visa",)
    )
    keyless_insert = await problems_of(
        sharded_db,
        "INSERT INTO payments (payment_id, status, amount_cents, currency) VALUES ($1, $2, $3, $4)",
        (uuid.uuid4(), "authorized", 100, "EUR"),
    )
    other = uuid.uuid4()
    while await shard_of(sharded_db, other) == await shard_of(sharded_db, order_id):
        other = uuid.uuid4()
    two_orders = await problems_of(
        sharded_db,
        "SELECT e.seq FROM order_events e JOIN order_sagas s ON s.order_id = $2"
        " WHERE e.order_id = $1",
        (order_id, other),
    )
    volatile = await problems_of(
        sharded_db,
        "UPDATE order_sagas SET lease_until = clock_timestamp() WHERE order_id = $1",
        (order_id,),
    )
    upsert_now = await problems_of(
        sharded_db,
        "INSERT INTO payments (order_id, payment_id, status, amount_cents, currency)"
        " VALUES ($1, $2, 'authorized', 1, 'EUR')"
        " ON CONFLICT (order_id) DO UPDATE SET updated_at = now() RETURNING payment_id",
        (order_id, uuid.uuid4()),
    )
    by_id = await problems_of(
        sharded_db,
        "SELECT e.seq FROM order_events e JOIN order_sagas s USING (order_id)"
        " WHERE e.order_id = $1",
        (order_id,),
    )

    assert by_token == [f"order_sagas: {SHARDS} shards"]
    assert keyless_insert == ["INSERT INTO payments without its distribution column order_id"]
    (colocation,) = two_orders
    assert colocation.startswith("colocated tables ('order_events', 'order_sagas'")
    assert upsert_now == ["a function that is not immutable in DO UPDATE SET updated_at = now()"]
    assert volatile == ["a volatile function in an UPDATE of order_sagas"]
    assert by_id == []
    # Listed statements are known as themselves, not as the per-order ones they resemble.
    assert known_multi_shard("DELETE FROM order_views") == "DELETE FROM order_views"
    assert known_multi_shard("DELETE FROM order_views WHERE id = $1") is None


@pytest.fixture
def logged_queries(sharded_dsn: str, monkeypatch: pytest.MonkeyPatch) -> list[LoggedQuery]:
    """Every statement that pools made from now on run on the sharded database."""
    database = urlsplit(sharded_dsn).path.lstrip("/")
    logged: list[LoggedQuery] = []
    original = core.db._init_connection

    def log(record: LoggedQuery) -> None:
        if record.conn_params.database == database:
            logged.append(record)

    async def init(conn: asyncpg.Connection) -> None:
        await original(conn)
        conn.add_query_logger(log)

    monkeypatch.setattr(core.db, "_init_connection", init)
    return logged


async def test_an_order_lifecycle_stays_on_one_shard(
    start_services: ServicesFactory,
    orders_settings: Settings,
    sharded_dsn: str,
    sharded_db: asyncpg.Connection,
    products_db: asyncpg.Connection,
    logged_queries: list[LoggedQuery],
) -> None:
    # A payment deadline that a slow machine does not hit: this test is about where the
    # statements go, not about timeouts.
    services = await start_services(
        database_url=sharded_dsn, db_pool_max_size=3, payment_timeout=10.0
    )
    shop = new_shop(services, orders_settings, sharded_db, products_db)
    try:
        mug = await shop.product(price_cents=1250, stock=10)
        # Placed with an idempotency key, confirmed, cancelled: refunded.
        key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
        refunded = await shop.place([(mug["id"], 2)], headers=key)
        assert (await shop.outcome(refunded["id"]))["status"] == "confirmed"
        await _forget_responses(orders_settings)  # the key is found in the database now
        again = await shop.orders.post(
            ORDERS, json=order_body([(mug["id"], 2)]), headers={**shop.customer.headers, **key}
        )
        assert (await again.json())["id"] == refunded["id"]
        cancel = await shop.orders.post(
            order_path(refunded["id"], "cancel"), headers=shop.customer.headers
        )
        assert cancel.status == 202, await cancel.text()
        await shop.settled(refunded["id"])
        assert "payment.refunded" in await shop.history(refunded["id"])
        # Declined: rejected, its stock released.
        declined = await shop.place([(mug["id"], 1)], "tok_decline")
        assert (await shop.outcome(declined["id"]))["status"] == "rejected"
        # Confirmed and shipped.
        shipped = await shop.place([(mug["id"], 1)], user=shop.other)
        assert (await shop.outcome(shipped["id"], user=shop.other))["status"] == "confirmed"
        ship = await shop.orders.post(order_path(shipped["id"], "ship"), headers=shop.admin.headers)
        assert ship.status == 200, await ship.text()
        listed = await shop.orders.get(ORDERS, headers=shop.customer.headers)
        assert {o["id"] for o in (await listed.json())["items"]} == {
            refunded["id"],
            declined["id"],
        }
        for order_id in (refunded["id"], declined["id"], shipped["id"]):
            await shop.settled(order_id)
        pool = await create_pool(sharded_dsn, max_size=1)
        try:
            assert await OrdersRepository(pool).differing_from_replay() == []
        finally:
            await pool.close()
    finally:
        await shop.catalog.cleanup(products_db)

    checked: set[str] = set()
    known: set[str] = set()
    problems: dict[str, list[str]] = {}
    explained: set[tuple[str, str]] = set()
    for record in list(logged_queries):
        if (record.query, repr(record.args)) in explained:
            continue
        explained.add((record.query, repr(record.args)))
        fragment = known_multi_shard(record.query)
        if fragment is not None:
            known.add(fragment)
            continue
        found = await problems_of(sharded_db, record.query, tuple(record.args or ()))
        refused = citus_refusal(record.query)
        if refused is not None:
            listed = [p for p in found if p.startswith(_VOLATILE_UPDATE)]
            if not listed:
                found.append(f"listed in CITUS_REFUSES as {refused!r} but accepted now")
            found = [p for p in found if p not in listed]
        if found:
            problems[normalized(record.query)] = found
        checked.update(_TABLES.findall(record.query))

    assert problems == {}
    assert checked == set(DISTRIBUTION)  # every distributed table was read or written
    assert "FROM order_views WHERE ($1::uuid IS NULL OR user_id = $1)" in known


async def _forget_responses(settings: Settings) -> None:
    """Delete the idempotent responses Redis remembers, as a crash after the commit would."""
    redis = Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{settings.redis_namespace}:idem:*")]
        assert keys
        await redis.delete(*keys)
    finally:
        await redis.aclose()
