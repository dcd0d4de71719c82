"""The orders service: event-sourced orders, the order saga, the read model (CQRS)."""

from services.orders.app import create_orders_app
from services.orders.settings import Settings

__all__ = ["Settings", "create_orders_app"]
