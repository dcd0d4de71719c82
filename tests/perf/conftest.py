"""The whole system as the security suite launches it (``tests.security.conftest.system``):
every service, the dashboard and the gateway as their own processes, on throw-away databases,
a Redis namespace and a RabbitMQ exchange of the session, rate limits out of the way."""

from __future__ import annotations

import pytest

from tests.security.conftest import system

__all__ = ["system"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The load test floods the shared system's bus with events; the dashboard's feed then
    takes longer than the security suite's 20 s to reach a new one. Run it after every test
    that reads that system."""
    load = [item for item in items if item.nodeid.startswith("tests/perf/")]
    if load:
        items[:] = [item for item in items if item not in load] + load
