"""Business metrics of the users service, in the application's Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["UsersMetrics"]


class UsersMetrics:
    """Registrations (``users_registered_total``), counted once the account has committed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registered = Counter(
            "users_registered", "Accounts registered (self-service sign-ups)", registry=registry
        )
