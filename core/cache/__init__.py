"""The cache: ``@cached`` over an in-process LRU, Redis and memcached.

Single flight per key, a cross-process stampede lock, early refresh, invalidation by key and tag
broadcast to every instance, negative caching, fail-open tiers behind circuit breakers, warm-up
and per-function metrics. ``core.cache.cache`` explains what staleness is bounded by and which
module does what; ``core.cache.flow`` how a call goes through the tiers.

Typical wiring (invalidations as broadcasts on the app's bus, so after ``bus_ctx``)::

    app = create_app("products", settings, resources=[
        postgres_ctx(...), bus_ctx(settings), cache_ctx(settings, invalidation="bus"), ...
    ])

    @cached(cache=lambda self: self.cache, ttl=60, key="product:{product_id}",
            tags=["product:{product_id}"])
    async def get(self, product_id: UUID) -> Product: ...
"""

from core.cache.app import (
    CACHE,
    Invalidation,
    Warmup,
    cache_ctx,
    cache_from_settings,
    cache_warmup_ctx,
)
from core.cache.cache import TIER_NAMES, Cache
from core.cache.decorator import BoundCachedFunction, CachedFunction, CacheResolver, cached
from core.cache.events import CacheInvalidated
from core.cache.keys import CacheKeyError, KeySpace
from core.cache.memcached_tier import MemcachedTier
from core.cache.memory import MemoryTier
from core.cache.policy import TierName
from core.cache.redis_tier import RedisTier
from core.cache.serialize import InvalidRecord, Record, decode_record, encode_record
from core.cache.stats import CacheStats, FunctionStats
from core.cache.warming import WarmProgress

__all__ = [
    "CACHE",
    "TIER_NAMES",
    "BoundCachedFunction",
    "Cache",
    "CacheInvalidated",
    "CacheKeyError",
    "CacheResolver",
    "CacheStats",
    "CachedFunction",
    "FunctionStats",
    "InvalidRecord",
    "Invalidation",
    "KeySpace",
    "MemcachedTier",
    "MemoryTier",
    "Record",
    "RedisTier",
    "TierName",
    "WarmProgress",
    "Warmup",
    "cache_ctx",
    "cache_from_settings",
    "cache_warmup_ctx",
    "cached",
    "decode_record",
    "encode_record",
]
