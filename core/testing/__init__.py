"""Test helpers for services built on core (pytest-aiohttp, real PostgreSQL and Redis).

The pytest plugin (``core.testing.plugin``, loaded automatically once aioshop is installed) gives:

- ``throwaway_database``: a session-scoped factory ``(name, alembic_dir) -> dsn`` creating a fresh
  database named ``test_<service>_<random>``, migrates it to head and drops it after the session;
- ``redis_namespace``: a key namespace unique to the test session;
- ``service_client``: a factory ``(app) -> TestClient`` over pytest-aiohttp's ``aiohttp_client``;
- ``wait_for``: poll an async condition until it holds or a deadline passes (no sleeps in tests).
"""

from core.testing.helpers import assert_problem, wait_for

__all__ = ["assert_problem", "wait_for"]
