"""The products service: catalog, cached reads, inventory and stock reservations."""

from services.products.app import create_products_app
from services.products.settings import Settings

__all__ = ["Settings", "create_products_app"]
