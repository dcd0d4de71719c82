"""Database lifecycle for services on core: create, drop, and migrate with Alembic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config

__all__ = ["alembic_config", "create_database", "drop_database", "sqlalchemy_url", "upgrade"]


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy (asyncpg dialect) spelling of a ``postgresql://`` DSN."""
    return urlunsplit(urlsplit(dsn)._replace(scheme="postgresql+asyncpg"))


def _split_database(dsn: str) -> tuple[str, str]:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("the database URL names no database")
    return urlunsplit(parts._replace(path="/postgres")), name


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist; return whether it was created."""
    admin_dsn, name = _split_database(dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created concurrently by another process
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    """Drop the database ``dsn`` names, disconnecting its clients first."""
    admin_dsn, name = _split_database(dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    finally:
        await conn.close()


def alembic_config(script_location: Path, dsn: str) -> Config:
    """An Alembic ``Config`` for the environment at ``script_location`` pointed at ``dsn``."""
    if not (script_location / "env.py").is_file():
        raise ValueError(f"no Alembic environment at {script_location}")
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def upgrade(script_location: Path, dsn: str, revision: str = "head") -> None:
    """Create the database if missing and migrate it to ``revision``.

    Synchronous (Alembic runs its own event loop): from async code, call it in a thread.
    """
    asyncio.run(create_database(dsn))
    command.upgrade(alembic_config(script_location, dsn), revision)
