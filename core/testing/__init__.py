"""Test helpers for services built on core (pytest-aiohttp, real PostgreSQL and Redis).

The pytest plugin (``core.testing.plugin``, loaded automatically once aioshop is installed) gives:

- ``throwaway_database``: a session-scoped factory ``(name, alembic_dir) -> dsn`` creating a fresh
  database named ``test_<service>_<random>``, migrates it to head and drops it after the session;
- ``redis_namespace``: a key namespace unique to the test session;
- ``service_client``: a factory ``(app) -> TestClient`` over pytest-aiohttp's ``aiohttp_client``;
- ``wait_for``: poll an async condition until it holds or a deadline passes (no sleeps in tests);
- ``free_port`` and ``refuses_connections``: a port to start a server on, and whether one is
  gone;
- ``memory_bus_kit``, ``amqp_bus_kit`` and ``bus_kit`` (both in turn): a ``BusKit`` of buses on
  a transport of the test's own, with ``publish_and_wait`` and ``record`` (an ``EventLog``) to
  test a publisher or a consumer in a few lines (``core.testing.bus``);
- ``span_recorder``: tracing on for one test, its spans kept in memory (a ``SpanRecorder``).
"""

from core.testing.bus import BusKit, EventLog, Received
from core.testing.helpers import assert_problem, free_port, refuses_connections, wait_for
from core.testing.tracing import SpanRecorder

__all__ = [
    "BusKit",
    "EventLog",
    "Received",
    "SpanRecorder",
    "assert_problem",
    "free_port",
    "refuses_connections",
    "wait_for",
]
