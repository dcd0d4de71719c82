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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.db import create_pool
from services.orders.repository import OrdersRepository
from services.orders.settings import Settings

__all__ = ["add_commands", "check_read_model", "rebuild_read_model"]


@asynccontextmanager
async def _repository(dsn: str) -> AsyncIterator[OrdersRepository]:
    # Maintenance over every order: no statement timeout of a request's (a rebuild of a large
    # read model reads and writes it all in one transaction).
    pool = await create_pool(dsn, min_size=1, max_size=1, statement_timeout=None)
    try:
        yield OrdersRepository(pool)
    finally:
        await pool.close()


async def rebuild_read_model(dsn: str) -> int:
    """Rebuild the read model of the database at ``dsn``; return the number of orders."""
    async with _repository(dsn) as repository, repository.transaction() as conn:
        return await repository.rebuild(conn)


async def check_read_model(dsn: str) -> list[str]:
    """The ids of orders whose live view differs from a replay of their stream (rolled back)."""
    async with _repository(dsn) as repository:
        return sorted(str(order_id) for order_id in await repository.differing_from_replay())


async def _sagas(dsn: str) -> dict[str, int]:
    async with _repository(dsn) as repository:
        return await repository.sagas_by_step()


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
