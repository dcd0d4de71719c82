"""How the orders store is distributed once it outgrows one PostgreSQL (Citus): each table's
distribution column, and which tables share shards (docs/scaling.md says why).

The order id distributes the event store, the sagas, the payments and the read model, colocated:
an order's stream, saga, payment and view live on one shard, so every step of its saga (lock,
replay, append, project, move the step), its payment and ``GET /orders/{id}`` are single-shard.
A placement's idempotency key is found by ``(user_id, key)`` before the order id exists: that
table is distributed by ``user_id``, in a group of its own. The bus's ``outbox`` and ``inbox``
are generic (no order id) and stay on the coordinator (Citus local tables).

Every per-order query names the distribution column with an equality (``tests/services/orders/
test_sharding.py`` proves it on hash-partitioned tables); the queries that span shards by nature
are listed there with their reason.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CITUS_DDL", "COLOCATION", "DISTRIBUTION", "LOCAL"]

DISTRIBUTION: Final[dict[str, str]] = {
    "order_events": "order_id",
    "order_sagas": "order_id",
    "order_views": "id",
    "payments": "order_id",
    "order_requests": "user_id",
}
"""Each distributed table's distribution column."""

COLOCATION: Final[tuple[tuple[str, ...], ...]] = (
    ("order_events", "order_sagas", "order_views", "payments"),
    ("order_requests",),
)
"""Groups of tables whose rows of one distribution value share a shard."""

LOCAL: Final[dict[str, str]] = {
    "outbox": "the bus's transactional outbox: no order id to distribute by; on the coordinator",
    "inbox": "the bus's consumer inbox: keyed by (consumer, event id); on the coordinator",
}
"""Tables that are not distributed, and why."""

CITUS_DDL: Final[tuple[str, ...]] = (
    "SELECT create_distributed_table('order_events', 'order_id')",
    "SELECT create_distributed_table('order_sagas', 'order_id', colocate_with => 'order_events')",
    "SELECT create_distributed_table('order_views', 'id', colocate_with => 'order_events')",
    "SELECT create_distributed_table('payments', 'order_id', colocate_with => 'order_events')",
    "SELECT create_distributed_table('order_requests', 'user_id', colocate_with => 'none')",
    "SELECT citus_add_local_table_to_metadata('outbox')",
    "SELECT citus_add_local_table_to_metadata('inbox')",
)
"""What a Citus coordinator runs once, after the migrations, to distribute the store."""
