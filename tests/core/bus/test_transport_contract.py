"""One contract, two transports: the in-memory one and AMQP on the real RabbitMQ.

Every test gets a started transport of each kind, unique queue names and routing keys (and, on
AMQP, an exchange of its own), and deletes what it declared afterwards. Ordering arguments use
a single consumer with ``prefetch=1``: a queue is FIFO, so once the last message published has
been handled, every message routed before it has been too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from core.bus.amqp import AmqpTransport
from core.bus.memory import InMemoryTransport
from core.bus.transport import (
    Incoming,
    IncomingHandler,
    PermanentFailure,
    PublishError,
    RetryPolicy,
    Transport,
)
from core.testing import wait_for
from tests.core.bus.conftest import AMQP_URL, delete_topology, holds, unique


@dataclass
class Harness:
    """A started transport and the names a test declared on it."""

    transport: Transport
    kind: str
    declared: dict[str, set[float]] = field(default_factory=dict)

    def queue(self, label: str = "q") -> str:
        """A fresh queue name."""
        return unique(label)

    async def consume(
        self,
        queue: str,
        patterns: Sequence[str],
        handler: IncomingHandler,
        *,
        prefetch: int = 32,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """``transport.consume``, remembering the queue for the cleanup."""
        self.declared.setdefault(queue, set()).update(retry.delays)
        await self.transport.consume(queue, patterns, handler, prefetch=prefetch, retry=retry)

    async def publish(self, routing_key: str, *, message_id: str | None = None) -> str:
        """Publish a small JSON body; return its message id."""
        message_id = message_id or uuid.uuid4().hex
        body = f'{{"n": "{message_id}"}}'.encode()
        await self.transport.publish(
            routing_key, body, message_id=message_id, headers={"x-source": "tests"}
        )
        return message_id


@pytest.fixture(params=["memory", "amqp", "amqp-quorum"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A started transport of each kind (AMQP with classic and with quorum queues); on AMQP its
    queues and exchange are deleted after."""
    exchange = unique("events")
    transport: Transport
    if request.param == "memory":
        transport = InMemoryTransport()
    else:
        transport = AmqpTransport(
            AMQP_URL,
            exchange=exchange,
            reconnect_delays=(0.05, 0.2, 0.5),
            drain_timeout=5,
            queue_type="quorum" if request.param == "amqp-quorum" else "classic",
        )
    await transport.start()
    harness = Harness(transport, request.param)
    yield harness
    await transport.stop()
    if request.param != "memory":
        await delete_topology(harness.declared.items(), [exchange])


class Recorder:
    """A handler that records what it received."""

    def __init__(self) -> None:
        self.received: list[Incoming] = []

    async def __call__(self, message: Incoming) -> None:
        self.received.append(message)

    def ids(self) -> list[str | None]:
        return [m.message_id for m in self.received]


def uniquely(text: str, suffix: str) -> str:
    """Rename every literal word of a pattern or key (``order`` → ``order<suffix>``).

    A bijective renaming of words keeps topic semantics and makes the keys of this test run
    its own.
    """
    return ".".join(w if w in ("*", "#") else f"{w}{suffix}" for w in text.split("."))


TOPIC_CASES = [
    # pattern, keys it matches, keys it does not
    ("order.*", ["order.placed", "order.shipped"], ["order", "order.placed.late", "user.placed"]),
    ("#", ["order.placed", "user", "a.b.c.d"], []),
    (
        "*.created",
        ["product.created", "user.created"],
        ["created", "product.created.v2", "product.updated"],
    ),
    ("order.#", ["order", "order.placed", "order.placed.late"], ["user.order", "orders.placed"]),
    ("order.placed", ["order.placed"], ["order.placed.late", "order.shipped", "order", "placed"]),
]


@pytest.mark.parametrize(("pattern", "matching", "other"), TOPIC_CASES)
async def test_topic_matching(
    harness: Harness, pattern: str, matching: list[str], other: list[str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    queue, recorder = harness.queue(), Recorder()
    await harness.consume(queue, [uniquely(pattern, suffix)], recorder, prefetch=1)

    for key in other:
        await harness.publish(uniquely(key, suffix))
    expected = [await harness.publish(uniquely(key, suffix)) for key in matching]

    await wait_for(holds(lambda: len(recorder.received) >= len(expected)), within=10)
    assert recorder.ids() == expected
    assert [m.routing_key for m in recorder.received] == [uniquely(k, suffix) for k in matching]
    assert all(m.queue == queue and m.attempt == 1 for m in recorder.received)
    assert all(m.headers == {"x-source": "tests"} for m in recorder.received)


async def test_one_copy_per_queue_however_many_patterns_match(harness: Harness) -> None:
    suffix = uuid.uuid4().hex[:8]
    both, one = harness.queue("both"), harness.queue("one")
    first, second = Recorder(), Recorder()
    patterns = [uniquely(p, suffix) for p in ("order.*", "order.#", "*.placed", "#")]
    await harness.consume(both, patterns, first, prefetch=1)
    await harness.consume(one, [uniquely("*.placed", suffix)], second, prefetch=1)

    key = uniquely("order.placed", suffix)
    ids = [await harness.publish(key), await harness.publish(key)]

    await wait_for(holds(lambda: ids[-1] in first.ids() and ids[-1] in second.ids()), within=10)
    assert first.ids() == ids
    assert second.ids() == ids


async def test_competing_consumers_share_a_queue(harness: Harness) -> None:
    key, queue = unique("work.item"), harness.queue()
    handled: dict[str, list[str | None]] = {"a": [], "b": []}
    busy: set[str] = set()
    both_busy = asyncio.Event()

    def consumer(name: str) -> IncomingHandler:
        async def handle(message: Incoming) -> None:
            handled[name].append(message.message_id)
            busy.add(name)
            if len(busy) == 2:
                both_busy.set()
            # Each consumer holds its first message until the other has one too: with
            # prefetch=1 this proves the two take turns instead of one taking everything.
            await both_busy.wait()

        return handle

    await harness.consume(queue, [key], consumer("a"), prefetch=1)
    await harness.consume(queue, [key], consumer("b"), prefetch=1)
    ids = [await harness.publish(key) for _ in range(20)]

    await wait_for(holds(lambda: len(handled["a"]) + len(handled["b"]) >= len(ids)), within=15)
    everything = handled["a"] + handled["b"]
    assert sorted(everything, key=str) == sorted(ids)  # each handled exactly once
    assert handled["a"], "consumer a got nothing"
    assert handled["b"], "consumer b got nothing"


async def test_prefetch_bounds_handlers_in_flight(harness: Harness) -> None:
    key, queue = unique("load"), harness.queue()
    in_flight = peak = done = 0

    async def handle(message: Incoming) -> None:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)  # the handler's work
        in_flight -= 1
        done += 1

    await harness.consume(queue, [key], handle, prefetch=2)
    for _ in range(12):
        await harness.publish(key)

    await wait_for(holds(lambda: done >= 12), within=15)
    assert peak == 2


async def test_failing_handler_is_retried_along_the_ladder(harness: Harness) -> None:
    key, queue = unique("flaky"), harness.queue()
    seen: list[tuple[Incoming, float]] = []

    async def handle(message: Incoming) -> None:
        seen.append((message, time.monotonic()))
        if message.attempt < 3:
            raise RuntimeError(f"attempt {message.attempt} fails")

    await harness.consume(queue, [key], handle, retry=RetryPolicy((0.2, 0.4)))
    message_id = await harness.publish(key)

    await wait_for(holds(lambda: len(seen) >= 3), within=15)
    messages = [m for m, _ in seen]
    assert [m.attempt for m in messages] == [1, 2, 3]
    assert {m.message_id for m in messages} == {message_id}
    assert {m.routing_key for m in messages} == {key}
    assert {m.body for m in messages} == {messages[0].body}
    assert all(m.headers == {"x-source": "tests"} for m in messages)
    times = [t for _, t in seen]
    assert times[1] - times[0] >= 0.19  # the ladder's delays are waited out, never shortened
    assert times[2] - times[1] >= 0.39
    assert await harness.transport.parked(queue) == []


async def test_exhausted_message_is_parked_and_replayed(harness: Harness) -> None:
    key, queue = unique("poison"), harness.queue()
    calls: list[int] = []
    headers: list[dict[str, object]] = []
    healthy = False

    async def handle(message: Incoming) -> None:
        calls.append(message.attempt)
        headers.append(dict(message.headers))
        if not healthy:
            raise ValueError("boom")

    await harness.consume(queue, [key], handle, retry=RetryPolicy((0.1, 0.1)))
    message_id = await harness.publish(key)

    parked = await wait_for(lambda: harness.transport.parked(queue), within=15)
    assert calls == [1, 2, 3]
    assert len(parked) == 1
    assert parked[0].message_id == message_id
    assert parked[0].routing_key == key
    assert parked[0].attempts == 3
    assert "boom" in parked[0].reason
    assert parked[0].body == f'{{"n": "{message_id}"}}'.encode()
    assert parked[0].headers == {"x-source": "tests"}
    assert await harness.transport.parked(queue) == parked  # inspecting leaves it in place

    healthy = True
    assert await harness.transport.replay(queue) == 1
    await wait_for(holds(lambda: len(calls) >= 4), within=10)
    assert calls[3] == 1  # attempts start over
    assert headers[3] == {"x-source": "tests"}  # the publisher's headers survive replay
    assert await harness.transport.parked(queue) == []
    assert await harness.transport.replay(queue) == 0


async def test_permanent_failure_is_parked_at_once(harness: Harness) -> None:
    key, queue = unique("invalid"), harness.queue()
    calls: list[int] = []

    async def handle(message: Incoming) -> None:
        calls.append(message.attempt)
        raise PermanentFailure("cannot ever work")

    await harness.consume(queue, [key], handle, retry=RetryPolicy((0.1, 0.1)))
    message_id = await harness.publish(key)

    parked = await wait_for(lambda: harness.transport.parked(queue), within=10)
    assert calls == [1]
    assert [(p.message_id, p.attempts, p.routing_key) for p in parked] == [(message_id, 1, key)]
    assert "permanent" in parked[0].reason
    assert "cannot ever work" in parked[0].reason


async def test_parked_of_an_unknown_queue_is_empty(harness: Harness) -> None:
    queue = harness.queue("unknown")
    assert await harness.transport.parked(queue) == []
    assert await harness.transport.replay(queue) == 0


async def test_publish_after_stop_raises(harness: Harness) -> None:
    await harness.transport.stop()
    assert not harness.transport.connected
    with pytest.raises(PublishError):
        await harness.publish(unique("late"))


async def test_stop_lets_handlers_in_flight_finish(harness: Harness) -> None:
    key, queue = unique("slow"), harness.queue()
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str | None] = []

    async def handle(message: Incoming) -> None:
        started.set()
        await release.wait()
        finished.append(message.message_id)

    await harness.consume(queue, [key], handle)
    message_id = await harness.publish(key)
    async with asyncio.timeout(10):
        await started.wait()

    asyncio.get_running_loop().call_later(0.1, release.set)
    async with asyncio.timeout(10):
        await harness.transport.stop()
    assert finished == [message_id]


async def test_parked_limit_returns_the_oldest(harness: Harness) -> None:
    key, queue = unique("batch"), harness.queue()

    async def handle(message: Incoming) -> None:
        raise PermanentFailure("no")

    await harness.consume(queue, [key], handle, prefetch=1)
    ids = [await harness.publish(key) for _ in range(3)]

    async def all_parked() -> bool:
        # Counted without reading: a read returns what it read to the queue, and a quorum
        # queue puts returned messages at its back, behind one parked meanwhile.
        return (await harness.transport.parked_count(queue) or 0) >= 3

    await wait_for(all_parked, within=10)
    assert Counter(p.message_id for p in await harness.transport.parked(queue)) == Counter(ids)
    oldest = await harness.transport.parked(queue, limit=2)
    assert [p.message_id for p in oldest] == ids[:2]
    assert await harness.transport.replay(queue, limit=1) == 1


async def test_broadcast_gives_every_subscriber_its_own_copy(harness: Harness) -> None:
    key, queue = unique("telemetry"), harness.queue()
    first, second, durable = Recorder(), Recorder(), Recorder()
    await harness.consume(queue, [key], durable, prefetch=1)
    one = await harness.transport.broadcast([key], first)
    two = await harness.transport.broadcast([key], second, queue=unique("broadcast"))
    assert one.queue != two.queue
    assert one.connected
    assert two.connected

    ids = [await harness.publish(key) for _ in range(3)]
    await wait_for(
        holds(lambda: first.ids() == ids and second.ids() == ids and durable.ids() == ids),
        within=10,
    )
    assert all(m.queue == one.queue and m.routing_key == key for m in first.received)
    assert all(m.headers == {"x-source": "tests"} for m in first.received)

    await one.stop()
    assert not one.connected
    await one.stop()  # twice: harmless
    last = await harness.publish(key)
    await wait_for(holds(lambda: second.ids()[-1:] == [last]), within=10)
    await wait_for(holds(lambda: durable.ids()[-1:] == [last]), within=10)
    assert first.ids() == ids


async def test_a_failing_broadcast_handler_loses_that_message_only(harness: Harness) -> None:
    key = unique("flaky.telemetry")
    seen: list[str | None] = []

    async def handle(message: Incoming) -> None:
        seen.append(message.message_id)
        if len(seen) == 1:
            raise RuntimeError("the first one fails")

    await harness.transport.broadcast([key], handle)
    ids = [await harness.publish(key) for _ in range(3)]
    await wait_for(holds(lambda: len(seen) >= 3), within=10)
    assert seen == ids  # nothing retried, nothing lost after the failure
