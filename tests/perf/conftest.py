"""The whole system as the security suite launches it (``tests.security.conftest.system``):
every service, the dashboard and the gateway as their own processes, on throw-away databases,
a Redis namespace and a RabbitMQ exchange of the session, rate limits out of the way."""

from __future__ import annotations

from tests.security.conftest import system

__all__ = ["system"]
