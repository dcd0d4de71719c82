"""Typed application keys of the orders service."""

from __future__ import annotations

from aiohttp import web

from services.orders.saga import SagaRunner
from services.orders.service import OrdersService

__all__ = ["ORDERS_SERVICE", "SAGA_RUNNER"]

ORDERS_SERVICE = web.AppKey("orders_service", OrdersService)
SAGA_RUNNER = web.AppKey("orders_saga_runner", SagaRunner)
