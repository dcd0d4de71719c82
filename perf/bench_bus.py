"""Publish+consume throughput of the bus over AMQP against raw aiormq, on the real RabbitMQ.

Run from the project root::

    .venv/bin/python -m perf.bench_bus [--messages 5000] [--publishers 64] [--prefetch 32]

The paths move the same envelope bytes through a topic exchange into a durable queue, with
publisher confirms, persistent messages and manual acks at the same prefetch:

- ``core.bus``: ``Bus.publish(event)`` over ``AmqpTransport``, a subscriber that counts (so the
  envelope is built, serialized, parsed and validated, and the retry topology is declared);
- ``AmqpTransport`` alone: the raw path's bytes through the transport (no envelope work), to
  tell the transport's cost from the envelope's and the ``Bus``'s;
- ``raw aiormq``: ``basic_publish`` on a confirm channel and a ``basic_consume`` callback that
  acks and counts (the baseline: the least any aiormq-based bus can cost).

Each path gets a discarded warm-up, then the clock runs from the first publish to the last
message handled. ``--publishers`` concurrent publishers share the work, each waiting for its
confirms. Every run uses an exchange and queues of its own on 127.0.0.1 and deletes them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from core.bus import Bus, Delivery, Envelope, Event, Incoming, RetryPolicy
from core.bus.amqp import AmqpTransport, delay_queue_name, parking_queue_name

URL = "amqp://guest:guest@127.0.0.1:5672/"
BASELINE = "raw aiormq (confirms, manual ack, same prefetch) in the same run"
RUN_TIMEOUT = 300.0
WARMUP = 200


class BenchTick(Event):
    """The benchmark's event (about the size of a small domain event)."""

    event_type = "bench.tick"

    seq: int
    sku: str
    quantity: int


def tick(seq: int) -> BenchTick:
    """The ``seq``-th event."""
    return BenchTick(seq=seq, sku=f"SKU-{seq % 997:05d}", quantity=seq % 7 + 1)


@dataclass
class Result:
    """One path's measurement."""

    name: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages published and consumed per second."""
        return self.messages / self.seconds


async def run_publishers(
    count: int, publishers: int, publish: Callable[[int], Awaitable[None]]
) -> None:
    """``publish(0..count-1)`` from ``publishers`` concurrent loops."""

    async def loop(first: int) -> None:
        for seq in range(first, count, publishers):
            await publish(seq)

    await asyncio.gather(*(loop(i) for i in range(min(publishers, count))))


async def bench_bus(
    count: int, publishers: int, prefetch: int, exchange: str, queue: str
) -> Result:
    """Publish and consume ``count`` events through ``Bus`` over ``AmqpTransport``."""
    transport = AmqpTransport(URL, exchange=exchange, publish_timeout=30)
    bus = Bus(transport, source="bench")
    received = 0
    target = 0
    done = asyncio.Event()

    async def on_tick(event: BenchTick, ctx: Delivery) -> None:
        nonlocal received
        received += 1
        if received >= target:
            done.set()

    bus.consume(on_tick, queue=queue, prefetch=prefetch)
    await bus.start()
    try:

        async def publish(seq: int) -> None:
            await bus.publish(tick(seq))

        async def measure(n: int) -> float:
            nonlocal received, target
            received, target = 0, n
            done.clear()
            start = time.perf_counter()
            await run_publishers(n, publishers, publish)
            await done.wait()
            return time.perf_counter() - start

        await measure(WARMUP)
        return Result("core.bus (Bus + AmqpTransport)", count, await measure(count))
    finally:
        await bus.stop()


async def bench_transport(
    count: int, publishers: int, prefetch: int, exchange: str, queue: str
) -> Result:
    """The same bytes as the raw path through ``AmqpTransport`` alone (no envelope work)."""
    bodies = [Envelope.wrap(tick(seq), source="bench").to_bytes() for seq in range(count)]
    transport = AmqpTransport(URL, exchange=exchange, publish_timeout=30)
    received = 0
    target = 0
    done = asyncio.Event()

    async def on_message(message: Incoming) -> None:
        nonlocal received
        received += 1
        if received >= target:
            done.set()

    await transport.start()
    try:
        await transport.consume(queue, [BenchTick.event_type], on_message, prefetch=prefetch)

        async def publish(seq: int) -> None:
            await transport.publish(
                BenchTick.event_type,
                bodies[seq % len(bodies)],
                message_id=uuid.uuid4().hex,
                headers={"x-source": "bench"},
            )

        async def measure(n: int) -> float:
            nonlocal received, target
            received, target = 0, n
            done.clear()
            start = time.perf_counter()
            await run_publishers(n, publishers, publish)
            await done.wait()
            return time.perf_counter() - start

        await measure(WARMUP)
        return Result("AmqpTransport alone", count, await measure(count))
    finally:
        await transport.stop()


async def bench_raw(
    count: int, publishers: int, prefetch: int, exchange: str, queue: str
) -> Result:
    """Publish and consume ``count`` envelopes with aiormq alone, the same topology idea."""
    bodies = [Envelope.wrap(tick(seq), source="bench").to_bytes() for seq in range(count)]
    received = 0
    target = 0
    done = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        nonlocal received
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        received += 1
        if received >= target:
            done.set()

    async with aiormq.connect(URL) as connection:
        publisher = await connection.channel(publisher_confirms=True)
        await publisher.exchange_declare(exchange, exchange_type="topic", durable=True)
        await publisher.queue_declare(queue, durable=True)
        await publisher.queue_bind(queue, exchange, routing_key=BenchTick.event_type)
        consumer = await connection.channel(publisher_confirms=False)
        await consumer.basic_qos(prefetch_count=prefetch)
        await consumer.basic_consume(queue, on_message, no_ack=False)

        async def publish(seq: int) -> None:
            confirm = await publisher.basic_publish(
                bodies[seq % len(bodies)],
                exchange=exchange,
                routing_key=BenchTick.event_type,
                properties=spec.Basic.Properties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=uuid.uuid4().hex,
                ),
            )
            if not isinstance(confirm, spec.Basic.Ack):
                raise RuntimeError(f"not confirmed: {confirm!r}")

        async def measure(n: int) -> float:
            nonlocal received, target
            received, target = 0, n
            done.clear()
            start = time.perf_counter()
            await run_publishers(n, publishers, publish)
            await done.wait()
            return time.perf_counter() - start

        await measure(WARMUP)
        return Result("raw aiormq", count, await measure(count))


async def cleanup(exchanges: list[str], queues: list[str]) -> None:
    """Delete what the run declared (the bus queue with its retry and parking queues)."""
    async with aiormq.connect(URL) as connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
            await channel.queue_delete(parking_queue_name(queue))
            for delay in RetryPolicy().delays:
                await channel.queue_delete(delay_queue_name(queue, delay))
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def run(args: argparse.Namespace) -> list[Result]:
    """Every path, one after the other, in this event loop; cleans up even on failure."""
    run_id = uuid.uuid4().hex[:10]
    names = {path: f"bench.{path}.{run_id}" for path in ("bus", "transport", "raw")}
    benches = {"raw": bench_raw, "transport": bench_transport, "bus": bench_bus}
    results: dict[str, Result] = {}
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            for path, bench in benches.items():
                results[path] = await bench(
                    args.messages, args.publishers, args.prefetch, names[path], names[path]
                )
    finally:
        # The exchange and the queue of a path share its name.
        await cleanup(list(names.values()), list(names.values()))
    return [results["bus"], results["transport"], results["raw"]]


def report(results: list[Result]) -> None:
    """Print the rates, the ratios to the baseline and the baseline's name."""
    print(f"\n{'path':<34}{'messages':>10}{'seconds':>10}{'msg/s':>10}")
    for r in results:
        print(f"{r.name:<34}{r.messages:>10}{r.seconds:>10.2f}{r.rate:>10.0f}")
    bus, transport, raw = results
    print(
        f"\nratio core.bus ÷ raw aiormq (msg/s): {bus.rate / raw.rate:.3f}   baseline: {BASELINE}"
    )
    share = transport.rate / raw.rate
    print(f"(of which the transport: AmqpTransport alone ÷ raw aiormq = {share:.3f})")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark on uvloop, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000, help="messages per path")
    parser.add_argument("--publishers", type=int, default=64, help="concurrent publishers")
    parser.add_argument("--prefetch", type=int, default=32, help="consumer prefetch")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.publishers < 1 or args.prefetch < 1:
        parser.error("--messages, --publishers and --prefetch must be positive")

    import uvloop

    try:
        results = uvloop.run(run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 1
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
