"""The body of every service's Alembic ``env.py``: async migrations over asyncpg."""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from core.migrate import sqlalchemy_url


def _url(service: str) -> str:
    configured = context.config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    settings_module = importlib.import_module(f"services.{service}.settings")
    return sqlalchemy_url(settings_module.Settings().database_url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = async_engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run(service: str) -> None:
    """Run the migrations of ``service`` (offline mode prints the SQL)."""
    url = _url(service)
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_online(url))
