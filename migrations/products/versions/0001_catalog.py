"""Categories, products, inventory and reservations.

Every filter and sort of ``GET /api/v1/products`` has an index: the keyset indexes end with
``id`` so that a page boundary between equal sort keys is exact; a backward scan serves the
descending sorts. ``products.search`` is a generated ``tsvector`` (name weighted above
description) under a GIN index. ``inventory.available`` is generated too, and the CHECK keeps
``0 <= reserved <= on_hand`` whatever the code does.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the catalog, inventory and reservation tables and their indexes."""
    op.execute(
        """
        CREATE TABLE categories (
            id         uuid PRIMARY KEY,
            name       text NOT NULL,
            slug       text NOT NULL,
            parent_id  uuid REFERENCES categories (id) ON DELETE RESTRICT,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT categories_slug_key UNIQUE (slug),
            CONSTRAINT categories_slug_format CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
            CONSTRAINT categories_not_own_parent CHECK (parent_id <> id)
        )
        """
    )
    op.execute("CREATE INDEX categories_parent ON categories (parent_id)")
    op.execute(
        """
        CREATE TABLE products (
            id          uuid PRIMARY KEY,
            sku         text NOT NULL,
            name        text NOT NULL,
            description text NOT NULL DEFAULT '',
            price_cents bigint NOT NULL,
            currency    text NOT NULL DEFAULT 'USD',
            category_id uuid REFERENCES categories (id) ON DELETE RESTRICT,
            attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            search      tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', name), 'A')
                || setweight(to_tsvector('english', description), 'B')
            ) STORED,
            CONSTRAINT products_sku_key UNIQUE (sku),
            CONSTRAINT products_price_not_negative CHECK (price_cents >= 0),
            CONSTRAINT products_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
            CONSTRAINT products_attributes_object CHECK (jsonb_typeof(attributes) = 'object')
        )
        """
    )
    op.execute("CREATE INDEX products_price_id ON products (price_cents, id)")
    op.execute("CREATE INDEX products_name_id ON products (name, id)")
    op.execute("CREATE INDEX products_created_id ON products (created_at, id)")
    op.execute("CREATE INDEX products_category_created ON products (category_id, created_at, id)")
    op.execute("CREATE INDEX products_category_price ON products (category_id, price_cents, id)")
    op.execute("CREATE INDEX products_search ON products USING gin (search)")
    op.execute(
        """
        CREATE TABLE inventory (
            product_id uuid PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
            on_hand    integer NOT NULL DEFAULT 0,
            reserved   integer NOT NULL DEFAULT 0,
            available  integer GENERATED ALWAYS AS (on_hand - reserved) STORED,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT inventory_reserved_range CHECK (reserved >= 0 AND reserved <= on_hand)
        )
        """
    )
    # in_stock=false is the rare case worth driving a listing from; in_stock=true probes the key.
    op.execute("CREATE INDEX inventory_sold_out ON inventory (product_id) WHERE available = 0")
    op.execute(
        """
        CREATE TABLE reservations (
            order_id    uuid PRIMARY KEY,
            status      text NOT NULL,
            reason      text,
            product_ids uuid[] NOT NULL DEFAULT '{}',
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT reservations_status CHECK (
                status IN ('reserved', 'failed', 'released', 'committed')
            ),
            CONSTRAINT reservations_reason CHECK (
                (status = 'failed' AND reason IN ('out_of_stock', 'unknown_product'))
                OR (status <> 'failed' AND reason IS NULL)
            )
        )
        """
    )
    op.execute(
        """
        CREATE TABLE reservation_lines (
            order_id   uuid NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
            product_id uuid NOT NULL,
            quantity   integer NOT NULL,
            PRIMARY KEY (order_id, product_id),
            CONSTRAINT reservation_lines_quantity CHECK (quantity > 0)
        )
        """
    )


def downgrade() -> None:
    """Drop what upgrade created."""
    op.execute("DROP TABLE reservation_lines")
    op.execute("DROP TABLE reservations")
    op.execute("DROP TABLE inventory")
    op.execute("DROP TABLE products")
    op.execute("DROP TABLE categories")
