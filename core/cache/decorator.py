"""``@cached``: cache an async function's or method's results in a ``Cache``.

Which ``Cache`` is found at call time, from ``cache=``: either a ``Cache`` itself, or a callable
given the call's first argument, which for a method is ``self``::

    class Products:
        def __init__(self, repo: Repository, cache: Cache) -> None:
            self.repo, self.cache = repo, cache

        @cached(cache=lambda self: self.cache, ttl=60, key="product:{product_id}",
                tags=["product:{product_id}", "products"], negative_ttl=5)
        async def get(self, product_id: UUID) -> Product | None:
            return await self.repo.get(product_id)

    await products.get(pid)             # cached
    await products.get.json(pid)        # its JSON, as cached (no decoding on a hit in memory)
    await products.get.invalidate(pid) # this key, in every tier and instance
    await products.cache.invalidate(tags=["products"])

There is no global default cache: a process can hold several applications, each with its own
cache and namespace (the single-process mode does).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from core.cache.cache import Cache
from core.cache.keys import KeyBuilder, KeySpec, TagSpec
from core.cache.policy import Policy, TierName

__all__ = ["BoundCachedFunction", "CacheResolver", "CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")

CacheResolver = Cache | Callable[[Any], Cache]


class CachedFunction(Generic[P, R]):
    """A cached async function: call it like the function; it also has ``invalidate``,
    ``refresh`` and ``key`` taking the same arguments. As a method, it binds like one."""

    def __init__(
        self, func: Callable[P, Awaitable[R]], policy: Policy[R], cache: CacheResolver
    ) -> None:
        functools.update_wrapper(self, func)
        self.policy = policy
        self._cache = cache
        self._attribute: str | None = None  # the name it is a method under, if it is one

    def cache_for(self, args: Sequence[Any]) -> Cache:
        """The cache of a call with positional arguments ``args``."""
        cache = self._cache
        if isinstance(cache, Cache):
            return cache
        if not args:
            raise TypeError(f"{self.policy.name}: cache= is a callable, but there is no argument")
        return cache(args[0])

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        # not ``async``: the read path's own coroutine is returned, a hit takes no extra frame
        cache = self._cache
        if not isinstance(cache, Cache):
            cache = self.cache_for(args)
        return cache.call(self.policy, args, kwargs)

    def json(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bytes | None]:
        """The result's JSON, as the cache stores it (``dumps``), or ``None`` for ``None``; a hit
        in memory returns it without decoding or encoding anything (``Cache.call_json``)."""
        return self.cache_for(args).call_json(self.policy, args, kwargs)

    def dumps(self, result: R) -> bytes:
        """The JSON the cache stores for ``result`` (what ``json`` returns for it)."""
        return self.policy.codec.dumps(result)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._attribute = name

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key the cache stores this call's result under (in Redis and memcached)."""
        return self.cache_for(args).record_key(self.policy, args, kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Invalidate this call's key everywhere (see ``Cache.invalidate``)."""
        key = self.policy.keys.key(args, kwargs)
        return await self.cache_for(args).invalidate(keys=[key])

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Compute this call's result now and store it in every tier (to warm, or after a write)."""
        return await self.cache_for(args).refresh(self.policy, args, kwargs)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> CachedFunction[P, R]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any]) -> BoundCachedFunction[R]: ...

    def __get__(
        self, instance: object | None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R] | BoundCachedFunction[R]:
        if instance is None:
            return self
        bound = BoundCachedFunction(self, instance)
        if self._attribute is not None:
            # bound once: later lookups find it in the instance, without this descriptor (an
            # instance without a __dict__ has it bound on every lookup)
            with contextlib.suppress(TypeError):
                vars(instance)[self._attribute] = bound
        return bound


class BoundCachedFunction(Generic[R]):
    """A cached method bound to its instance."""

    __slots__ = ("__self__", "_function")

    def __init__(self, function: CachedFunction[Any, R], instance: object) -> None:
        self._function = function
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, R]:
        return self._function(self.__self__, *args, **kwargs)

    def json(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, bytes | None]:
        """See ``CachedFunction.json``."""
        return self._function.json(self.__self__, *args, **kwargs)

    def dumps(self, result: R) -> bytes:
        """See ``CachedFunction.dumps``."""
        return self._function.dumps(result)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """See ``CachedFunction.key``."""
        return self._function.key(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """See ``CachedFunction.invalidate``."""
        return await self._function.invalidate(self.__self__, *args, **kwargs)

    async def refresh(self, *args: Any, **kwargs: Any) -> R:
        """See ``CachedFunction.refresh``."""
        return await self._function.refresh(self.__self__, *args, **kwargs)


def cached(
    *,
    cache: CacheResolver,
    ttl: float,
    key: KeySpec = None,
    tags: TagSpec = (),
    tiers: Sequence[TierName] | None = None,
    negative_ttl: float | None = None,
    cache_errors: tuple[type[Exception], ...] = (),
    early_refresh: float | None = 1.0,
    stale_ttl: float = 0.0,
    l1_ttl: float | None = None,
    lock: bool = True,
    version: int = 1,
    name: str | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache the results of an async function (or method) for ``ttl`` seconds.

    - ``cache``: the ``Cache``, or a callable given the call's first argument (``self``) that
      returns it.
    - ``key``: a ``str.format`` template over the parameters (``"product:{product_id}"``), or a
      callable taking the function's arguments; by default the qualified name and the arguments.
    - ``tags``: templates (or one callable returning them) naming groups to invalidate together.
    - ``tiers``: the subset of the cache's tiers to use (``"memory"``, ``"redis"``,
      ``"memcached"``), in the cache's order; all by default.
    - ``negative_ttl``: cache ``None`` results (and ``cache_errors``, re-raised on a hit) for this
      long; by default ``None`` is not cached.
    - ``early_refresh``: the XFetch ``beta`` (``None`` disables): a hit shortly before expiry may
      start a background recomputation, so a hot key does not expire under load.
    - ``stale_ttl``: serve an expired result for this long while it is recomputed in the
      background (never after an invalidation).
    - ``l1_ttl``: how long this process serves an entry from memory (the cache's default bounds the
      staleness after a lost invalidation message; raise it only for data never invalidated).
    - ``lock``: take the cross-process stampede lock on a miss.
    - ``version``: bump it when the result's shape changes; old entries are then ignored.
    - ``name``: the function's label in metrics (its qualified name by default).

    Results are stored as JSON; the return annotation (a pydantic model, a dataclass, ...) is
    how they are read back and validated.
    """

    def decorate(func: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@cached needs an async function, not {func!r}")
        policy = Policy(
            func,
            keys=KeyBuilder(func, key, tags),
            ttl=ttl,
            name=name or f"{func.__module__}.{func.__qualname__}",
            tiers=tiers,
            negative_ttl=negative_ttl,
            cache_errors=cache_errors,
            early_refresh=early_refresh,
            stale_ttl=stale_ttl,
            l1_ttl=l1_ttl,
            lock=lock,
            version=version,
        )
        return CachedFunction(func, policy, cache)

    return decorate
