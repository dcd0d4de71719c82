"""The hot set a products instance warms before it reports ready (``PRODUCTS_CACHE_WARMUP``).

In order: the first page of categories, the first page of the default listing, the products the
orders reserve most (``PRODUCTS_CACHE_WARMUP_PRODUCTS``, from the reservations), then the
first listing page of each category on that first page, and each of those categories. Every load
reads through the service's cached methods, so it fills every tier as a request would (Redis and
memcached for the other instances, the in-process tier for this one), and builds on the way what
a first request would otherwise pay for: the codecs of the cached types, the connections and the
statements prepared on them.

The in-process tier serves an entry at most ``cache_l1_ttl`` after it was read (the bound on
staleness after a lost invalidation): what lasts of a warm-up is mostly the shared tiers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from services.products.repository.hot import HotRepository
from services.products.service.catalog import CatalogService
from services.products.service.listing import CategoryPage

__all__ = ["PAGE_SIZE", "hot_set"]

PAGE_SIZE = 20  # the API's default page size: the pages a client asks for first


async def hot_set(
    catalog: CatalogService, hot: HotRepository, *, products: int
) -> AsyncIterator[Awaitable[object]]:
    """The loads of the hot set, in order (``Cache.warm`` runs them a few at a time).

    The ids of the hot products and the categories are awaited between loads, while the loads
    named before them already run.
    """
    categories: asyncio.Future[CategoryPage] = asyncio.ensure_future(
        catalog.list_categories(limit=PAGE_SIZE, cursor=None)
    )
    try:
        yield categories
        yield catalog.list_products(limit=PAGE_SIZE)
        for product_id in await hot.most_reserved(products):
            yield catalog.find(product_id)
        for category in (await categories).items:
            yield catalog.list_products(limit=PAGE_SIZE, category_id=category.id)
            yield catalog.get_category(category.id)
    finally:
        categories.cancel()  # a no-op once it ran; ended with the warm-up otherwise
