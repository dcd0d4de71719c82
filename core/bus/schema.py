"""DDL of the bus tables every service database carries; call from a service's migration.

Migrations that ran must keep meaning the same thing: never edit these statements; add a new,
numbered constant for a later change and a migration that applies it.
"""

from __future__ import annotations

__all__ = ["DOWNGRADE", "DOWNGRADE_HEADERS", "UPGRADE", "UPGRADE_HEADERS"]

UPGRADE = (
    """
    CREATE TABLE outbox (
        id           uuid PRIMARY KEY,
        routing_key  text NOT NULL,
        envelope     jsonb NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        published_at timestamptz,
        attempts     integer NOT NULL DEFAULT 0,
        last_error   text
    )
    """,
    "CREATE INDEX outbox_unpublished ON outbox (created_at, id) WHERE published_at IS NULL",
    "CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL",
    """
    CREATE TABLE inbox (
        consumer     text NOT NULL,
        event_id     uuid NOT NULL,
        event_type   text NOT NULL,
        processed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, event_id)
    )
    """,
)

DOWNGRADE = ("DROP TABLE inbox", "DROP TABLE outbox")

# The headers an outbox row is published with: the trace context of the transaction that wrote
# it (``traceparent``/``tracestate``), so that the relay continues that trace later. NULL: none.
UPGRADE_HEADERS = ("ALTER TABLE outbox ADD COLUMN headers jsonb",)

DOWNGRADE_HEADERS = ("ALTER TABLE outbox DROP COLUMN headers",)
