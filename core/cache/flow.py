"""The read path of a cache: tiers in order, single flight, the stampede lock, early refresh.

A call of a ``@cached`` function goes:

1. In-process tier: a hit returns a freshly decoded copy, or one value decoded once when no
   caller can change it (``core.cache.memory``); ``call_json`` returns the JSON kept on the entry.
2. Otherwise one lookup per key per process (single flight: concurrent callers of the key await
   the first one's answer) through the remote tiers in order (Redis, memcached). Redis answers, in
   one round trip, the record and the current invalidation versions of the call's key and tags:
   for a key this process last saw in Redis (likely a hit) a plain ``MGET``; for another one a
   Lua script that also takes the key's short stampede lock when the record is absent (a miss
   then costs no extra round trip). A miss of a key thought present takes the lock after the
   read (``SET NX``: one more round trip, the price of a cheaper hit). A record whose stamps
   differ from the versions was computed before an invalidation and is skipped. A hit fills the
   tiers above it.
3. A miss computes, once. If another process holds the lock, this one polls the remote tiers for
   that process's result until ``lock_wait`` (taking the lock if it frees up), then computes
   anyway. The result is stamped with the versions read *before* computing and written to every
   tier; the Redis write releases the lock in the same round trip.

An invalidation (``invalidated()``) makes every lookup in flight, and what it would store in the
in-process tier, count for nothing: later callers start anew.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any, TypeVar

from core.cache.call import Call, Limits, Missing, Plan
from core.cache.keys import KeySpace
from core.cache.memory import MemoryEntry
from core.cache.policy import CachedError, Policy
from core.cache.redis_tier import RedisTier, Versions
from core.cache.serialize import InvalidRecord, Record, decode_record, encode_record
from core.cache.stats import CacheStats
from core.cache.tiers import TIER_NAMES, Tiers
from core.retry import Backoff

__all__ = ["CallPath"]

log = logging.getLogger("core.cache")

R = TypeVar("R")

_POLL_FIRST, _POLL_MAX = 0.005, 0.05
_PRESENT_MAX = 16_384  # record keys remembered as present in Redis (about 2 MB)


class _Sentinel:
    """An answer inside the cache that is not a result of the function."""


_COMPUTE = _Sentinel()
_RETRY = _Sentinel()


class CallPath:
    """Calls of cached functions through the tiers of one cache, and their background work.

    ``coordinated`` says whether Redis carries the invalidation versions and the locks (it is a
    tier of the cache). Background tasks (tier fills, refreshes, unlocks) are ``spawn``-ed and
    cancelled by ``close()``.
    """

    def __init__(
        self,
        keyspace: KeySpace,
        tiers: Tiers,
        stats: CacheStats,
        limits: Limits,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.keyspace = keyspace
        self.limits = limits
        self._tiers = tiers
        self._remote = tiers.remote
        self._redis = tiers.redis
        self._stats = stats
        self._clock = clock
        self._seq = 0
        self._plans: dict[Policy[Any], Plan] = {}
        self._flights: dict[str, asyncio.Future[tuple[str, Any]]] = {}
        self._refreshing: dict[str, asyncio.Task[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Record keys last seen in (or written to) Redis, oldest first: a call of one of them
        # reads it without the Lua script that takes the stampede lock on a miss.
        self._present: dict[str, None] = {}

    def invalidated(self) -> None:
        """An invalidation happened: a lookup in flight may return what preceded it, so later
        callers start anew and nothing in flight is stored in the in-process tier."""
        self._seq += 1
        self._flights.clear()

    def _stored(self, record_key: str) -> None:
        """``record_key`` is in Redis, as far as this process knows."""
        present = self._present
        if record_key not in present:
            if len(present) >= _PRESENT_MAX:
                del present[next(iter(present))]
            present[record_key] = None

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background until it ends or ``close()``."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel the background work and wait for it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # the call

    async def call(self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """The result of ``policy.func(*args, **kwargs)``, from the cache when possible.

        A hit in memory is the hot path: the key, one lookup, a decode and two counters; the
        ``Call`` and the tags are only made for what goes further.
        """
        started = perf_counter()
        plan = self._plans.get(policy) or self._plan(policy)
        key = policy.keys.key(args, kwargs)
        memory = plan.memory
        if memory is not None:
            record_key = plan.prefix + key
            now = self._clock()
            entry = memory.get(record_key, now)
            if entry is not None:
                try:
                    result = policy.value_of(entry)
                except InvalidRecord:  # a value its own type does not read back: never served
                    memory.delete(record_key)
                else:
                    self._memory_hit(plan, entry, now, started, (policy, args, kwargs, key))
                    return _unwrap(result)
            plan.stats.miss("memory")
        call = Call(self.keyspace, self._seq, policy, plan, args, kwargs, key)
        outcome = "miss"
        try:
            outcome, result = await self._single_flight(call)
        finally:
            plan.stats.observe(outcome, perf_counter() - started)
        if result is _RETRY:
            return await self.call(policy, args, kwargs)
        return _unwrap(result)  # type: ignore[no-any-return]

    async def call_json(
        self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes | None:
        """The JSON of ``call``'s result, as the policy's codec writes it; ``None`` for ``None``.

        A hit in memory returns bytes kept on the entry: neither decoded nor encoded again.
        """
        started = perf_counter()
        plan = self._plans.get(policy) or self._plan(policy)
        memory = plan.memory
        if memory is not None:
            key = policy.keys.key(args, kwargs)
            record_key = plan.prefix + key
            now = self._clock()
            entry = memory.get(record_key, now)
            if entry is not None:
                try:
                    body = policy.json_of(entry)
                except InvalidRecord:
                    memory.delete(record_key)
                else:
                    if body is not None:
                        self._memory_hit(plan, entry, now, started, (policy, args, kwargs, key))
                        return body
        # a miss, a cached None or error: the ordinary path
        result = await self.call(policy, args, kwargs)
        return None if result is None else policy.codec.dumps(result)

    def _memory_hit(
        self,
        plan: Plan,
        entry: MemoryEntry,
        now: float,
        started: float,
        call: tuple[Policy[Any], tuple[Any, ...], dict[str, Any], str],
    ) -> None:
        """Count a hit in memory; start an early refresh if it is due."""
        stats = plan.stats
        stats.hit("memory")
        policy = call[0]
        if now >= entry.quiet_until and policy.should_refresh(entry.record, now):
            self._start_refresh(Call(self.keyspace, self._seq, policy, plan, *call[1:]))
        stats.observe("memory", perf_counter() - started)

    async def refresh(self, policy: Policy[R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """Compute the result now and store it in every tier."""
        plan = self._plans.get(policy) or self._plan(policy)
        call = Call(self.keyspace, self._seq, policy, plan, args, kwargs)
        call.resolve_marks(self.keyspace)
        return await self._compute(call)  # type: ignore[no-any-return]

    def _plan(self, policy: Policy[Any]) -> Plan:
        wanted = TIER_NAMES if policy.tiers is None else policy.tiers
        unknown = set(wanted) - set(TIER_NAMES)
        if unknown:
            raise ValueError(f"{policy.name}: unknown tiers {sorted(unknown)}")
        memory = self._tiers.memory if "memory" in wanted else None
        remote = tuple(tier for tier in self._remote if tier.name in wanted)
        coordinate = self._redis is not None and bool(remote)
        l1_ttl = policy.l1_ttl if policy.l1_ttl is not None else self.limits.l1_ttl
        if not self._remote:
            l1_ttl = math.inf  # nothing shared, nobody else to invalidate: entries live their ttl
        prefix = self.keyspace.record("", policy.version)
        plan = Plan(memory, remote, l1_ttl, coordinate, self._stats.function(policy.name), prefix)
        self._plans[policy] = plan
        return plan

    async def _single_flight(self, call: Call) -> tuple[str, Any]:
        """The first caller of a key looks it up (and computes it); concurrent callers of the
        same key await its answer. If that first caller is cancelled, they start over."""
        flight = self._flights.get(call.record_key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[call.record_key] = flight
        try:
            answer = await self._fetch(call)
        except asyncio.CancelledError:
            flight.set_result(("miss", _RETRY))
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no waiter is a normal case
            raise
        else:
            flight.set_result(answer)
            return answer
        finally:
            if self._flights.get(call.record_key) is flight:
                del self._flights[call.record_key]

    # reading the remote tiers

    async def _versions(self, call: Call) -> Versions | None:
        if isinstance(call.versions, Missing):
            if self._redis is None or not call.plan.coordinate:
                call.versions = None
            else:
                call.versions = await self._redis.versions(call.version_keys)
        return call.versions

    async def _fetch(self, call: Call) -> tuple[str, Any]:
        """The flight of a call that missed memory: ``(outcome, result)``."""
        call.resolve_marks(self.keyspace)
        call.prepare_lock(self.keyspace, self.limits.lock_ttl)
        try:
            if call.plan.remote:
                now = self._clock()
                found = await self._read_remote(call, now, count=True)
                if found is not None:
                    index, record, raw, result = found
                    self._fill(call, record, raw, above=index, now=now)
                    if call.policy.should_refresh(record, now):
                        self._start_refresh(call)
                    return call.plan.remote[index].name, result
            return "miss", await self._load(call, refresh=False)
        finally:
            if call.locked and call.lock is not None and self._redis is not None:
                # taken by the read, then a lower tier had the record
                call.locked = None
                self.spawn(self._redis.unlock(call.lock[0], call.lock[1]))

    async def _read_remote(
        self, call: Call, now: float, *, count: bool
    ) -> tuple[int, Record, bytes, Any] | None:
        """The first valid record in the remote tiers: ``(tier index, record, raw, result)``."""
        stats = call.plan.stats
        for index, tier in enumerate(call.plan.remote):
            if isinstance(tier, RedisTier):
                lock = call.lock if call.locked is not True else None
                if call.locked is None and call.record_key in self._present:
                    lock = None  # likely a hit: a plain read; a miss takes the lock after it
                answer = await tier.read(call.record_key, call.version_keys, lock)
                if answer is None:
                    raw, call.versions = None, None
                    if call.locked is False:
                        call.locked = None  # Redis cannot say who holds it: stop waiting
                else:
                    raw, locked, call.versions = answer
                    call.locked = call.locked if locked is None else locked
            else:
                raw = await tier.get(call.record_key)
            found = None if raw is None else await self._accept(call, tier.name, raw, now)
            if found is None:
                if tier is self._redis:
                    self._present.pop(call.record_key, None)
                if count:
                    stats.miss(tier.name)
                continue
            if tier is self._redis:
                self._stored(call.record_key)
            if count:
                stats.hit(tier.name)
            assert raw is not None
            return index, found[0], raw, found[1]
        return None

    async def _accept(
        self, call: Call, tier: str, raw: bytes, now: float
    ) -> tuple[Record, Any] | None:
        """The record in ``raw`` and its result, if valid, current and not expired."""
        try:
            record = decode_record(raw)
            result = call.policy.decode(record)
        except InvalidRecord as exc:
            log.debug("%s: ignoring a record in %s: %s", call.policy.name, tier, exc)
            invalid = call.plan.stats.invalid
            invalid[tier] = invalid.get(tier, 0) + 1
            return None
        if now >= record.expires + call.policy.stale_ttl:
            return None
        if call.plan.coordinate and record.stamps != await self._versions(call):
            # computed before an invalidation, or Redis cannot tell (then nothing can vouch
            # for a shared record: an invalidation may have been missed)
            return None
        return record, result

    def _fill(self, call: Call, record: Record, raw: bytes, *, above: int, now: float) -> None:
        """Copy a record found in a remote tier to the tiers above it."""
        self._store_memory(call, record, confirmed_at=now)
        ttl = record.expires + call.policy.stale_ttl - now
        for tier in call.plan.remote[:above]:
            self.spawn(tier.set(call.record_key, raw, ttl))
            if tier is self._redis:
                self._stored(call.record_key)

    def _store_memory(self, call: Call, record: Record, *, confirmed_at: float) -> None:
        memory = call.plan.memory
        if memory is None or self._seq != call.seq:
            return  # an invalidation arrived meanwhile: the value may predate it
        expires_at = min(record.expires + call.policy.stale_ttl, confirmed_at + call.plan.l1_ttl)
        call.resolve_marks(self.keyspace)
        memory.set(
            call.record_key,
            record,
            expires_at=expires_at,
            owner=call.policy.name,
            marks=call.marks,
            quiet_until=call.policy.quiet_until(record),
        )

    def _start_refresh(self, call: Call) -> None:
        if call.record_key in self._refreshing:
            return
        fresh = Call(self.keyspace, self._seq, call.policy, call.plan, call.args, call.kwargs)
        fresh.resolve_marks(self.keyspace)
        task = self.spawn(self._load(fresh, refresh=True))
        self._refreshing[call.record_key] = task

        def done(task: asyncio.Task[Any]) -> None:
            if self._refreshing.get(call.record_key) is task:
                del self._refreshing[call.record_key]
            if task.cancelled():
                return
            error = task.exception()
            if error is not None and not isinstance(error, call.policy.cache_errors):
                log.warning("%s: background refresh failed: %r", call.policy.name, error)

        task.add_done_callback(done)

    # computing, once across processes

    async def _load(self, call: Call, *, refresh: bool) -> Any:
        """Compute a missing (or refreshing) result once across processes, if Redis allows.

        The lock was usually taken (or found taken) by the read; it is released by the write.
        """
        redis = self._redis if call.plan.coordinate else None
        call.prepare_lock(self.keyspace, self.limits.lock_ttl)
        if redis is None or call.lock is None:
            return await self._compute(call)
        lock_key, token, ttl = call.lock
        if call.locked is None:
            call.locked = await redis.try_lock(lock_key, token, ttl)
        if call.locked is False:
            if refresh:
                return None  # another instance is refreshing this key
            found = await self._wait_for_other(call, redis)
            if found is not _COMPUTE:
                return found
        try:
            return await self._compute(call)
        finally:
            if call.locked:  # not released by the write (it failed, or Redis is not a tier)
                call.locked = None
                await redis.unlock(lock_key, token)

    async def _wait_for_other(self, call: Call, redis: RedisTier) -> Any:
        """Poll for the result of the instance holding the lock, at most ``lock_wait`` seconds.

        Returns the result, or ``_COMPUTE`` once the lock is ours, the wait is over or Redis
        is gone.
        """
        assert call.lock is not None
        lock_key, token, ttl = call.lock
        reads_redis = redis in call.plan.remote
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.lock_wait
        # Full jitter: the callers waiting on one holder (in every instance) poll apart.
        backoff = Backoff(base=_POLL_FIRST, cap=_POLL_MAX)
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(backoff.next_delay(), remaining))
            now = self._clock()
            found = await self._read_remote(call, now, count=False)  # retries the lock too
            if found is not None:
                self._store_memory(call, found[1], confirmed_at=now)
                return found[3]
            if not reads_redis:
                call.locked = await redis.try_lock(lock_key, token, ttl)
            if call.locked is not False:
                break  # ours, or Redis cannot say
        return _COMPUTE

    async def _compute(self, call: Call) -> Any:
        """Run the function and store its result in every tier of the call."""
        policy, plan = call.policy, call.plan
        versions = await self._versions(call)
        created = self._clock()
        started = perf_counter()
        plan.stats.loads += 1
        try:
            result = await policy.func(*call.args, **call.kwargs)
        except policy.cache_errors as error:
            failed = policy.error_record(error, created=created, now=self._clock(), stamps=versions)
            await self._store(call, failed, confirmed_at=created)
            raise
        delta = perf_counter() - started
        record = policy.record(
            result, created=created, now=self._clock(), delta=delta, stamps=versions
        )
        if record is not None:
            await self._store(call, record, confirmed_at=created)
        return result

    async def _store(self, call: Call, record: Record, *, confirmed_at: float) -> None:
        raw = encode_record(record)
        if len(raw) > self.limits.max_value_bytes:
            call.policy.warn_once("size", "result of %d bytes not cached", len(raw))
            return
        self._store_memory(call, record, confirmed_at=confirmed_at)
        if call.plan.coordinate and record.stamps is None:
            return  # computed while Redis was away: no reader could accept it
        ttl = min(record.expires + call.policy.stale_ttl - self._clock(), self.limits.max_ttl)
        if not call.plan.remote or ttl <= 0:
            return
        writes = []
        if self._redis in call.plan.remote:
            self._stored(call.record_key)
        for tier in call.plan.remote:
            if call.locked and call.lock is not None and isinstance(tier, RedisTier):
                writes.append(tier.set_and_unlock(call.record_key, raw, ttl, call.lock))
                call.locked = None  # released with the write
            else:
                writes.append(tier.set(call.record_key, raw, ttl))
        await asyncio.gather(*writes)


def _unwrap(result: R | CachedError) -> R:
    if isinstance(result, CachedError):
        raise result.error
    return result
