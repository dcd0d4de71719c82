"""One Alembic environment per service database (``migrations/<service>/``).

``upgrade(service, dsn)`` creates the database when it is missing and migrates it to head; the
``aioshop migrate`` command and the test fixtures call it. Alembic's own CLI works too:
``alembic -c migrations/alembic.ini -n users upgrade head`` (URL from ``USERS_DATABASE_URL``).
"""

from __future__ import annotations

from pathlib import Path

from core import migrate

__all__ = ["MIGRATIONS_DIR", "SERVICES", "location", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent
SERVICES = ("users", "products", "orders")


def location(service: str) -> Path:
    """The Alembic environment of ``service``."""
    if service not in SERVICES:
        raise ValueError(f"no migrations for service {service!r}")
    return MIGRATIONS_DIR / service


def upgrade(service: str, dsn: str, revision: str = "head") -> None:
    """Create ``service``'s database if missing and migrate it to ``revision``."""
    migrate.upgrade(location(service), dsn, revision)
