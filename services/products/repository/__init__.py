"""SQL of the products service (asyncpg, parameterized only): the one place that knows its tables.

- ``catalog``: categories, products and the category tree (``CatalogRepository``);
- ``listing``: the statement of one page of ``GET /products`` (``ListingQuery``);
- ``inventory``: stock and the order saga's reservations (``InventoryRepository``);
- ``base``: the connection handling both share, the category-tree lock and the errors.

Locks are always taken in the same order, so that concurrent writers wait instead of
deadlocking: the category-tree advisory lock (shared by product writes, exclusive for moves
of a category), then a ``reservations`` row, then ``products`` rows, then ``inventory`` rows in
ascending ``product_id``.
"""

from services.products.repository.base import MissingReference, UniqueTaken
from services.products.repository.catalog import CatalogRepository
from services.products.repository.inventory import InventoryRepository
from services.products.repository.listing import ListingQuery, SortKey, SortName

__all__ = [
    "CatalogRepository",
    "InventoryRepository",
    "ListingQuery",
    "MissingReference",
    "SortKey",
    "SortName",
    "UniqueTaken",
]
