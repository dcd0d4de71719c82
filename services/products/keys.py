"""Typed application keys of the products service."""

from __future__ import annotations

from aiohttp import web

from services.products.service import ProductsService

__all__ = ["PRODUCTS_SERVICE"]

PRODUCTS_SERVICE = web.AppKey("products_service", ProductsService)
