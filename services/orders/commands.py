"""Command-line commands of the orders service (``aioshop orders ...``).

``add_commands(sub)`` adds the ``orders`` group to the ``aioshop`` parser:

- ``aioshop orders rebuild-read-model``: replace the read model by a replay of every stream;
- ``aioshop orders check-read-model``: compare the read model with a replay, change nothing
  (exit 1 if they differ);
- ``aioshop orders sagas``: how many sagas are at each step.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from core.db import create_pool, transaction
from services.orders.projection import VIEW_COLUMNS, rebuild
from services.orders.settings import Settings

__all__ = ["add_commands", "check_read_model", "rebuild_read_model"]


async def rebuild_read_model(dsn: str) -> int:
    """Rebuild the read model of the database at ``dsn``; return the number of orders."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with transaction(pool) as conn:
            return await rebuild(conn)
    finally:
        await pool.close()


async def read_model(dsn: str) -> list[dict[str, Any]]:
    """Every row of the read model, by id."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        rows = await pool.fetch(
            f"SELECT {', '.join(VIEW_COLUMNS)} FROM order_views ORDER BY id"  # noqa: S608  # nosec B608: constant columns
        )
        return [dict(r) for r in rows]
    finally:
        await pool.close()


async def check_read_model(dsn: str) -> list[str]:
    """The ids of orders whose live view differs from a replay of their stream (rolled back)."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    columns = ", ".join(VIEW_COLUMNS)
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(
                    f"CREATE TEMP TABLE live_views ON COMMIT DROP AS "  # noqa: S608  # nosec B608: constant columns
                    f"SELECT {columns} FROM order_views"
                )
                await rebuild(conn)
                rows = await conn.fetch(
                    f"""
                    SELECT coalesce(a.id, b.id) AS id FROM
                      (SELECT {columns} FROM live_views EXCEPT SELECT {columns} FROM order_views) a
                      FULL JOIN
                      (SELECT {columns} FROM order_views EXCEPT SELECT {columns} FROM live_views) b
                      ON a.id = b.id
                    """  # noqa: S608  # nosec B608: constant columns
                )
            finally:
                await tx.rollback()
        return sorted(str(r["id"]) for r in rows)
    finally:
        await pool.close()


async def _sagas(dsn: str) -> dict[str, int]:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        rows = await pool.fetch("SELECT step, count(*) AS n FROM order_sagas GROUP BY step")
        return {r["step"]: r["n"] for r in rows}
    finally:
        await pool.close()


def _dsn(args: argparse.Namespace) -> str:
    return str(args.database_url or Settings().database_url)


def cmd_rebuild(args: argparse.Namespace) -> int:
    """``aioshop orders rebuild-read-model``."""
    count = asyncio.run(rebuild_read_model(_dsn(args)))
    print(f"rebuilt the read model of {count} order(s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """``aioshop orders check-read-model``."""
    differing = asyncio.run(check_read_model(_dsn(args)))
    for order_id in differing:
        print(f"differs: {order_id}")
    print(f"{len(differing)} order(s) differ from their stream", file=sys.stderr)
    return 1 if differing else 0


def cmd_sagas(args: argparse.Namespace) -> int:
    """``aioshop orders sagas``."""
    for step, count in sorted(asyncio.run(_sagas(_dsn(args))).items()):
        print(f"{step:<12} {count}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``orders`` command group to the ``aioshop`` sub-parsers."""
    orders = sub.add_parser("orders", help="maintain the orders service's data")
    orders.add_argument(
        "--database-url", default=None, help="default: ORDERS_DATABASE_URL from the settings"
    )
    orders_sub = orders.add_subparsers(dest="orders_command", required=True)
    rebuild_cmd = orders_sub.add_parser(
        "rebuild-read-model", help="replace the read model by a replay of the order streams"
    )
    rebuild_cmd.set_defaults(func=cmd_rebuild)
    check = orders_sub.add_parser(
        "check-read-model", help="compare the read model with a replay (changes nothing)"
    )
    check.set_defaults(func=cmd_check)
    sagas = orders_sub.add_parser("sagas", help="count sagas by step")
    sagas.set_defaults(func=cmd_sagas)
