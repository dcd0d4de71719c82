"""The cache: ``@cached`` over an in-process LRU, Redis and memcached.

Single flight per key, a cross-process stampede lock, early refresh, invalidation by key and tag
broadcast to every instance, negative caching, fail-open tiers behind circuit breakers, warm-up
and per-function metrics. ``core.cache.cache`` explains how a call flows through the tiers and
what staleness is bounded by.

Typical wiring::

    app = create_app("products", settings, resources=[postgres_ctx(...), cache_ctx(settings)])

    @cached(cache=lambda self: self.cache, ttl=60, key="product:{product_id}",
            tags=["product:{product_id}"])
    async def get(self, product_id: UUID) -> Product: ...
"""

from core.cache.app import Warmup, cache_ctx, cache_from_settings
from core.cache.cache import TIER_NAMES, Cache
from core.cache.decorator import BoundCachedFunction, CachedFunction, CacheResolver, cached
from core.cache.keys import CacheKeyError, KeySpace
from core.cache.memcached_tier import MemcachedTier
from core.cache.memory import MemoryTier
from core.cache.policy import TierName
from core.cache.redis_tier import RedisTier
from core.cache.serialize import InvalidRecord, Record, decode_record, encode_record
from core.cache.stats import CacheStats, FunctionStats

__all__ = [
    "TIER_NAMES",
    "BoundCachedFunction",
    "Cache",
    "CacheKeyError",
    "CacheResolver",
    "CacheStats",
    "CachedFunction",
    "FunctionStats",
    "InvalidRecord",
    "KeySpace",
    "MemcachedTier",
    "MemoryTier",
    "Record",
    "RedisTier",
    "TierName",
    "Warmup",
    "cache_ctx",
    "cache_from_settings",
    "cached",
    "decode_record",
    "encode_record",
]
