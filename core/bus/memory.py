"""The in-memory transport: RabbitMQ's topic semantics inside one process.

For the single-process mode and for tests. One copy of a message per bound queue, competing
consumers on a queue, prefetch, the retry ladder and the parking queue behave as on AMQP; what
is lost is durability: a stopped process forgets its queues, including messages waiting for a
retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from core.bus.matching import topic_matches, validate_pattern
from core.bus.transport import (
    BROADCAST_MAX_LENGTH,
    BroadcastSubscription,
    Incoming,
    IncomingHandler,
    ParkedMessage,
    PermanentFailure,
    PublishError,
    RetryPolicy,
    Transport,
    broadcast_queue_name,
)

__all__ = ["InMemoryTransport"]

log = logging.getLogger("core.bus.memory")


class InMemoryTransport(Transport):
    """A topic exchange, queues, retries and parking in process memory.

    ``shared=True`` is for several apps in one process on one transport (the embedded mode):
    their buses' ``stop()`` then leaves it running, and its owner calls ``drain()`` and
    ``close()`` once every app has stopped taking requests, so that no app's shutdown drops the
    messages still queued for another.
    """

    messaging_system = "memory"

    def __init__(self, *, drain_timeout: float = 10.0, shared: bool = False) -> None:
        self.drain_timeout = drain_timeout
        self.shared = shared
        self._bindings: dict[str, set[str]] = defaultdict(set)
        self._queues: dict[str, asyncio.Queue[Incoming]] = {}
        self._parked: dict[str, list[ParkedMessage]] = defaultdict(list)
        self._consumers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.Task[None]] = set()
        self._broadcasts: list[_MemoryBroadcast] = []
        self._running = False

    @property
    def connected(self) -> bool:
        """Whether the transport accepts messages."""
        return self._running

    async def start(self) -> None:
        """Start accepting messages."""
        self._running = True

    @property
    def idle(self) -> bool:
        """Nothing queued, waiting for a retry or being handled."""
        return (
            not self._inflight
            and not self._timers
            and all(queue.empty() for queue in self._queues.values())
            and all(b.idle for b in self._broadcasts)
        )

    async def drain(self, *, within: float = 10.0, quiet: float = 0.2) -> bool:
        """Wait until the transport has been idle for ``quiet`` seconds (handlers may publish
        more); ``False`` if it was still busy after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        idle_since: float | None = None
        while loop.time() < deadline:
            if not self.idle:
                idle_since = None
            elif idle_since is None:
                idle_since = loop.time()
            elif loop.time() - idle_since >= quiet:
                return True
            await asyncio.sleep(0.02)  # polling interval of a wait with a deadline
        return False

    async def stop(self) -> None:
        """Stop consuming and wait for handlers in flight (a shared transport: nothing)."""
        if not self.shared:
            await self.close()

    async def close(self) -> None:
        """Stop consuming and wait for handlers in flight, shared or not."""
        self._running = False
        broadcasts, self._broadcasts = self._broadcasts, []
        await asyncio.gather(*(b.stop() for b in broadcasts))
        for task in [*self._timers, *self._consumers]:
            task.cancel()
        await asyncio.gather(*self._timers, *self._consumers, return_exceptions=True)
        self._consumers.clear()
        if self._inflight:
            _, stuck = await asyncio.wait(set(self._inflight), timeout=self.drain_timeout)
            for task in stuck:
                log.warning("cancelling a handler still running after %.1fs", self.drain_timeout)
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    def _queue(self, name: str) -> asyncio.Queue[Incoming]:
        if name not in self._queues:
            self._queues[name] = asyncio.Queue()
        return self._queues[name]

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Deliver one copy to every queue with a matching binding and every broadcast
        subscriber with a matching pattern."""
        if not self._running:
            raise PublishError("the in-memory transport is not running")
        for broadcast in self._broadcasts:
            if any(topic_matches(pattern, routing_key) for pattern in broadcast.patterns):
                broadcast.offer(
                    Incoming(
                        body=body,
                        routing_key=routing_key,
                        queue=broadcast.queue,
                        message_id=message_id,
                        headers=dict(headers or {}),
                    )
                )
        for queue, patterns in self._bindings.items():
            if any(topic_matches(pattern, routing_key) for pattern in patterns):
                self._queue(queue).put_nowait(
                    Incoming(
                        body=body,
                        routing_key=routing_key,
                        queue=queue,
                        message_id=message_id,
                        headers=dict(headers or {}),
                    )
                )

    async def consume(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        prefetch: int = 32,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """Bind ``queue`` and start a consumer on it (several consumers compete)."""
        for pattern in patterns:
            self._bindings[queue].add(validate_pattern(pattern))
        self._queue(queue)
        self._consumers.append(
            asyncio.create_task(self._consume(queue, handler, prefetch, retry), name=f"bus:{queue}")
        )

    async def broadcast(
        self,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        queue: str | None = None,
        max_length: int = BROADCAST_MAX_LENGTH,
    ) -> BroadcastSubscription:
        """Subscribe ``handler`` to its own bounded copy of every message matching
        ``patterns``, delivered in order, one at a time."""
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        subscription = _MemoryBroadcast(
            self,
            queue or broadcast_queue_name(self.exchange),
            tuple(validate_pattern(p) for p in patterns),
            handler,
            max_length,
        )
        self._broadcasts.append(subscription)
        return subscription

    def _forget(self, subscription: _MemoryBroadcast) -> None:
        if subscription in self._broadcasts:
            self._broadcasts.remove(subscription)

    async def _consume(
        self, queue: str, handler: IncomingHandler, prefetch: int, retry: RetryPolicy
    ) -> None:
        slots = asyncio.Semaphore(prefetch)
        source = self._queue(queue)
        while True:
            await slots.acquire()
            message = await source.get()
            task = asyncio.create_task(self._deliver(message, handler, retry))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _deliver(
        self, message: Incoming, handler: IncomingHandler, retry: RetryPolicy
    ) -> None:
        try:
            await handler(message)
        except asyncio.CancelledError:
            raise
        except PermanentFailure as exc:
            self._park(message, f"permanent failure: {exc}")
        except Exception as exc:
            delay = retry.delay_for(message.attempt)
            if delay is None:
                self._park(message, f"failed {message.attempt} times: {exc!r}")
                return
            again = Incoming(
                body=message.body,
                routing_key=message.routing_key,
                queue=message.queue,
                message_id=message.message_id,
                attempt=message.attempt + 1,
                headers=message.headers,
            )
            timer = asyncio.create_task(self._redeliver(again, delay))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)

    async def _redeliver(self, message: Incoming, delay: float) -> None:
        await asyncio.sleep(delay)  # the retry ladder's delay, by design
        if self._running:
            self._queue(message.queue).put_nowait(message)

    def _park(self, message: Incoming, reason: str) -> None:
        log.warning("parking %s on %s: %s", message.message_id, message.queue, reason)
        self._parked[message.queue].append(
            ParkedMessage(
                body=message.body,
                routing_key=message.routing_key,
                message_id=message.message_id,
                attempts=message.attempt,
                reason=reason,
                headers=message.headers,
            )
        )

    async def parked(self, queue: str, *, limit: int = 100) -> list[ParkedMessage]:
        """Parked messages of ``queue``, oldest first."""
        return list(self._parked.get(queue, [])[:limit])

    async def parked_count(self, queue: str) -> int | None:
        """How many messages of ``queue`` are parked."""
        return len(self._parked.get(queue, ()))

    async def replay(self, queue: str, *, limit: int | None = None) -> int:
        """Requeue parked messages of ``queue`` with fresh attempts."""
        parked = self._parked.get(queue, [])
        count = len(parked) if limit is None else min(limit, len(parked))
        moved, self._parked[queue] = parked[:count], parked[count:]
        for message in moved:
            self._queue(queue).put_nowait(
                Incoming(
                    body=message.body,
                    routing_key=message.routing_key,
                    queue=queue,
                    message_id=message.message_id,
                    headers=message.headers,
                )
            )
        return count


class _MemoryBroadcast(BroadcastSubscription):
    """A broadcast subscriber: a bounded buffer (oldest dropped) and a task draining it."""

    def __init__(
        self,
        transport: InMemoryTransport,
        queue: str,
        patterns: tuple[str, ...],
        handler: IncomingHandler,
        max_length: int,
    ) -> None:
        self.queue = queue
        self.patterns = patterns
        self._transport = transport
        self._handler = handler
        self._buffer: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=max_length)
        self._busy = False
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._run(), name=f"bus:broadcast:{queue}"
        )

    @property
    def connected(self) -> bool:
        """Whether the transport runs and this subscription is not stopped."""
        return self._task is not None and self._transport.connected

    @property
    def idle(self) -> bool:
        """Nothing buffered nor being handled."""
        return not self._busy and self._buffer.empty()

    def offer(self, message: Incoming) -> None:
        """Buffer ``message``, dropping the oldest one when full (``x-overflow: drop-head``)."""
        if self._task is None:
            return
        if self._buffer.full():
            self._buffer.get_nowait()
        self._buffer.put_nowait(message)

    async def stop(self) -> None:
        """Stop delivering; what is buffered is dropped."""
        task, self._task = self._task, None
        self._transport._forget(self)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            message = await self._buffer.get()
            self._busy = True
            try:
                await self._handler(message)
            except Exception:  # a broadcast is never redelivered: log and go on
                log.exception(
                    "broadcast handler on %s failed for %s", self.queue, message.message_id
                )
            finally:
                self._busy = False
