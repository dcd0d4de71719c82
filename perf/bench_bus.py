"""Bus throughput against raw aiormq, and outbox relay lag, on the real RabbitMQ and PostgreSQL.

Run from the project root::

    .venv/bin/python -m perf.bench_bus [--duration 3] [--rounds 3] [--publishers 64] [--prefetch 32]

The throughput paths move the same envelope through a topic exchange into a durable queue, with
publisher confirms, persistent messages, the ``x-source`` header and a manual ack per message
(not waiting for the socket) at the same prefetch, from ``--publishers`` concurrent publishers
each waiting for its confirm:

- ``raw aiormq`` (the baseline: the least any aiormq-based bus can cost): ``basic_publish`` of
  pre-built envelope bytes on a confirm channel, a ``basic_consume`` callback that acks;
- ``AmqpTransport alone``: the same bytes through the transport (no envelope work);
- ``core.bus``: ``Bus.publish`` of pre-built events and a typed ``Bus.consume`` handler (the
  envelope is built, encoded, parsed and validated; the retry topology is declared).

After a warm-up, each path publishes for ``--duration`` s (clock: first publish to last message
handled; latency: publish call to handler), ``--rounds`` times in rotated order; a ratio is the
median over rounds of the path's rate over raw aiormq's in the same round (a shared machine).

The outbox rows measure ``OutboxRelay`` as a service runs it: events written by
``Outbox.publish`` and committed, until the handler gets them; ``steady``: one event per
transaction at ``--relay-rate``/s; ``burst``: ``--burst`` events in one transaction. Every run
uses exchanges, queues and a database of its own on 127.0.0.1, and deletes them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiormq
import asyncpg
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from core.bus import Bus, Delivery, Envelope, Event, Incoming, OutboxRelay, RetryPolicy
from core.bus import schema as bus_schema
from core.bus.amqp import AmqpTransport, delay_queue_name, parking_queue_name
from core.db import create_pool, transaction
from core.migrate import create_database, drop_database

URL = "amqp://guest:guest@127.0.0.1:5672/"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{database}"
BASELINE = "raw aiormq (confirms, manual ack, same prefetch) in the same run"
RUN_TIMEOUT = 300.0
WARMUP = 200
POOL = 1024  # pre-built events and bodies, used in turn
HEADERS = {"x-source": "bench"}  # what the bus sends with every message


class BenchTick(Event):
    """The benchmark's event (about the size of a small domain event)."""

    event_type = "bench.tick"

    seq: int
    sku: str
    quantity: int


def tick(seq: int) -> BenchTick:
    """The ``seq``-th event."""
    return BenchTick(seq=seq, sku=f"SKU-{seq % 997:05d}", quantity=seq % 7 + 1)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a rate, its latency percentiles, its ratio to raw aiormq."""

    name: str
    rate: float  # messages (events, for the relay) per second
    p50_ms: float
    p99_ms: float
    ratio: float | None  # to raw aiormq's rate in the same round (median over rounds)
    note: str


@dataclass
class Sample:
    """One measurement of one path."""

    messages: int
    seconds: float
    cpu_seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        """Messages published and handled per second."""
        return self.messages / self.seconds


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Probe:
    """Receipts of one measurement: how many, their latencies, when the last came."""

    latencies: list[float] = field(default_factory=list)
    target: int | None = None
    last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def got(self, latency: float) -> None:
        """Count a message handled ``latency`` seconds after its publish began."""
        self.latencies.append(latency)
        self.last = time.perf_counter()
        if self.target is not None and len(self.latencies) >= self.target:
            self.done.set()

    def expect(self, published: int) -> None:
        """Publishing is over: ``done`` once ``published`` messages are handled."""
        self.target = published
        if len(self.latencies) >= published:
            self.done.set()


class Path(Protocol):
    """A way to publish and consume: ``open`` declares its own exchange and queue and starts
    consuming, ``publish(seq)`` sends one message (its handler tells ``probe``), ``close``."""

    probe: Probe

    async def open(self) -> None: ...

    async def publish(self, seq: int) -> None: ...

    async def close(self) -> None: ...


class RawPath:
    """aiormq alone: a confirm channel to publish, a consumer channel that acks each message."""

    def __init__(self, name: str, prefetch: int, bodies: list[bytes]) -> None:
        self.name, self.prefetch, self.bodies, self.probe = name, prefetch, bodies, Probe()
        self.sent: dict[str, float] = {}

    async def open(self) -> None:
        self.connection = await aiormq.connect(URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        await self.channel.exchange_declare(self.name, exchange_type="topic", durable=True)
        await self.channel.queue_declare(self.name, durable=True)
        await self.channel.queue_bind(self.name, self.name, routing_key=BenchTick.event_type)
        consumer = await self.connection.channel(publisher_confirms=False)
        await consumer.basic_qos(prefetch_count=self.prefetch)
        await consumer.basic_consume(self.name, self.on_message, no_ack=False)

    async def on_message(self, message: DeliveredMessage) -> None:
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag, wait=False)
        mid = message.header.properties.message_id or ""
        self.probe.got(time.perf_counter() - self.sent.pop(mid))

    async def publish(self, seq: int) -> None:
        mid = uuid.uuid4().hex
        self.sent[mid] = time.perf_counter()
        confirm = await self.channel.basic_publish(
            self.bodies[seq % POOL],
            exchange=self.name,
            routing_key=BenchTick.event_type,
            properties=spec.Basic.Properties(
                content_type="application/json",
                delivery_mode=2,
                message_id=mid,
                headers=dict(HEADERS),
            ),
        )
        if not isinstance(confirm, spec.Basic.Ack):
            raise RuntimeError(f"not confirmed: {confirm!r}")

    async def close(self) -> None:
        await self.connection.close()  # the channels go with it


class TransportPath:
    """The same bytes through ``AmqpTransport`` (no envelope work)."""

    def __init__(self, name: str, prefetch: int, bodies: list[bytes]) -> None:
        self.name, self.prefetch, self.bodies, self.probe = name, prefetch, bodies, Probe()
        self.sent: dict[str, float] = {}
        self.transport = AmqpTransport(URL, exchange=name, publish_timeout=30)

    async def open(self) -> None:
        await self.transport.start()
        await self.transport.consume(
            self.name, [BenchTick.event_type], self.on_message, prefetch=self.prefetch
        )

    async def on_message(self, message: Incoming) -> None:
        self.probe.got(time.perf_counter() - self.sent.pop(message.message_id or ""))

    async def publish(self, seq: int) -> None:
        mid = uuid.uuid4().hex
        self.sent[mid] = time.perf_counter()
        await self.transport.publish(
            BenchTick.event_type, self.bodies[seq % POOL], message_id=mid, headers=HEADERS
        )

    async def close(self) -> None:
        await self.transport.stop()


class BusPath:
    """``Bus.publish`` and a typed ``Bus.consume`` handler over ``AmqpTransport``."""

    def __init__(self, name: str, prefetch: int, events: list[BenchTick]) -> None:
        self.events, self.probe = events, Probe()
        self.bus = Bus(AmqpTransport(URL, exchange=name, publish_timeout=30), source="bench")
        self.bus.consume(self.on_tick, queue=name, prefetch=prefetch)

    async def open(self) -> None:
        await self.bus.start()

    async def on_tick(self, event: BenchTick, ctx: Delivery) -> None:
        # The envelope's time is taken as the publish begins (the same clock).
        self.probe.got(time.time() - ctx.envelope.occurred_at.timestamp())

    async def publish(self, seq: int) -> None:
        await self.bus.publish(self.events[seq % POOL])

    async def close(self) -> None:
        await self.bus.stop()


async def drive(
    path: Path, publishers: int, *, seconds: float | None = None, count: int | None = None
) -> Sample:
    """Publish from ``publishers`` loops for ``seconds`` (or ``count`` messages), wait until
    every message is handled."""
    path.probe = probe = Probe()
    seqs = itertools.count()
    published = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + seconds if seconds is not None else float("inf")
    limit = count if count is not None else sys.maxsize

    async def loop() -> None:
        nonlocal published
        while time.perf_counter() < deadline and (seq := next(seqs)) < limit:
            await path.publish(seq)
            published += 1

    await asyncio.gather(*(loop() for _ in range(publishers)))
    probe.expect(published)
    await probe.done.wait()
    return Sample(published, probe.last - start, time.process_time() - cpu, probe.latencies)


PATHS = ("raw", "transport", "bus")
TITLES = {"raw": "raw aiormq", "transport": "AmqpTransport alone", "bus": "core.bus"}


async def measure_throughput(
    duration: float, *, rounds: int, publishers: int, prefetch: int, created: list[str]
) -> dict[str, list[Sample]]:
    """Each path ``rounds`` times in turn (rotated order); names are appended to ``created``."""
    events = [tick(seq) for seq in range(POOL)]
    bodies = [Envelope.wrap(e, source="bench").to_bytes() for e in events]
    factories: dict[str, Callable[[str], Path]] = {
        "raw": lambda name: RawPath(name, prefetch, bodies),
        "transport": lambda name: TransportPath(name, prefetch, bodies),
        "bus": lambda name: BusPath(name, prefetch, events),
    }
    samples: dict[str, list[Sample]] = {key: [] for key in PATHS}
    run_id = uuid.uuid4().hex[:10]
    for round_no in range(rounds):
        for key in PATHS[round_no % 3 :] + PATHS[: round_no % 3]:
            name = f"bench.{key}.{run_id}.{round_no}"
            created.append(name)
            path = factories[key](name)
            await path.open()
            try:
                await drive(path, publishers, count=WARMUP)
                samples[key].append(await drive(path, publishers, seconds=duration))
            finally:
                await path.close()
    return samples


def throughput_rows(samples: dict[str, list[Sample]]) -> list[Row]:
    """The medians over rounds; each ratio is taken within its round."""
    rows = []
    for key in PATHS:
        runs = samples[key]
        ratios = [s.rate / raw.rate for s, raw in zip(runs, samples["raw"], strict=True)]
        cpu = statistics.median(s.cpu_seconds / s.messages * 1e6 for s in runs)
        raw_cpu = statistics.median(s.cpu_seconds / s.messages * 1e6 for s in samples["raw"])
        rows.append(
            Row(
                TITLES[key],
                statistics.median(s.rate for s in runs),
                statistics.median(percentile(s.latencies, 0.5) for s in runs) * 1000,
                statistics.median(percentile(s.latencies, 0.99) for s in runs) * 1000,
                statistics.median(ratios),
                f"client CPU {cpu:.0f} us/msg (raw/this {raw_cpu / cpu:.2f}); ratio per round "
                + " ".join(f"{r:.2f}" for r in ratios),
            )
        )
    return rows


class RelayRig:
    """A bus with an outbox relay on a throw-away database, and a consumer that notes when
    each event arrives."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, name: str, prefetch: int) -> None:
        self.pool = pool
        self.bus = Bus(AmqpTransport(URL, exchange=name, publish_timeout=30), source="bench")
        self.bus.consume(self.on_tick, queue=name, prefetch=prefetch)
        self.relay = OutboxRelay(pool, self.bus, dsn=dsn)
        self.received: dict[uuid.UUID, float] = {}
        self.expected = 0
        self.arrived = asyncio.Event()

    async def on_tick(self, event: BenchTick, ctx: Delivery) -> None:
        """Note the arrival of an event."""
        self.received[ctx.envelope.id] = time.perf_counter()
        if len(self.received) >= self.expected:
            self.arrived.set()

    async def write(self, seqs: range) -> list[uuid.UUID]:
        """Record the events ``seqs`` in the outbox in one transaction; their ids."""
        async with transaction(self.pool) as conn:
            return [(await self.bus.outbox.publish(conn, tick(seq))).id for seq in seqs]

    async def lags(self, committed: dict[uuid.UUID, float]) -> list[float]:
        """Wait for every event of ``committed`` (id: commit time); their lags, then forget."""
        self.expected = len(committed)
        if len(self.received) < self.expected:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), RUN_TIMEOUT)
        lags = [self.received[i] - t for i, t in committed.items()]
        self.received.clear()
        return lags


async def measure_relay(
    duration: float, *, rate: float, burst: int, prefetch: int, raw_rate: float | None
) -> list[Row]:
    """Outbox rows committed until handled, through ``OutboxRelay`` as a service runs it:
    ``steady`` (one event per transaction at ``rate``/s), ``burst`` (``burst`` in one)."""
    run_id = uuid.uuid4().hex[:10]
    name, dsn = f"bench.relay.{run_id}", PG_URL.format(database=f"bench_bus_{run_id}")
    await create_database(dsn)
    try:
        pool = await create_pool(dsn, min_size=2, max_size=4)
        rig = RelayRig(pool, dsn, name, prefetch)
        try:
            for statement in (*bus_schema.UPGRADE, *bus_schema.UPGRADE_HEADERS):
                await pool.execute(statement)
            await rig.bus.start()
            await rig.relay.start()
            # Once these arrive, the relay is listening.
            await rig.lags(dict.fromkeys(await rig.write(range(20)), 0.0))
            committed: dict[uuid.UUID, float] = {}
            start = next_at = time.perf_counter()
            for seq in range(max(1, round(duration * rate))):
                (event_id,) = await rig.write(range(seq, seq + 1))
                committed[event_id] = time.perf_counter()
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))  # the pace
            steady = await rig.lags(committed)
            steady_rate = len(steady) / (
                max(t + lag for t, lag in zip(committed.values(), steady, strict=True)) - start
            )
            ids = await rig.write(range(burst))
            committed = dict.fromkeys(ids, time.perf_counter())
            lagged = await rig.lags(committed)
            burst_rate = burst / max(lagged)
        finally:
            await rig.relay.stop()
            await rig.bus.stop()
            await pool.close()
            await cleanup([name], [name])
    finally:
        await drop_database(dsn)
    steady_note = f"{rate:.0f}/s offered, 1 event per transaction; lag = commit to handler"
    burst_note = f"{burst} events in 1 transaction; events/s = {burst} / (last handled - commit)"
    burst_ratio = burst_rate / raw_rate if raw_rate else None
    return [
        Row("outbox relay, steady", steady_rate, *quartiles(steady), None, steady_note),
        Row("outbox relay, burst", burst_rate, *quartiles(lagged), burst_ratio, burst_note),
    ]


def quartiles(lags: list[float]) -> tuple[float, float]:
    """The p50 and p99 of ``lags`` (seconds), in milliseconds."""
    return percentile(lags, 0.5) * 1000, percentile(lags, 0.99) * 1000


async def cleanup(exchanges: list[str], queues: list[str]) -> None:
    """Delete what the run declared (the bus queues with their retry and parking queues)."""
    async with aiormq.connect(URL) as connection:
        channel = await connection.channel()
        for queue in queues:
            delays = [delay_queue_name(queue, delay) for delay in RetryPolicy().delays]
            for name in (queue, parking_queue_name(queue), *delays):
                await channel.queue_delete(name)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def measure_all(
    duration: float = 3.0,
    *,
    rounds: int = 3,
    publishers: int = 64,
    prefetch: int = 32,
    relay_rate: float = 200.0,
    burst: int = 2000,
    relay: bool = True,
) -> list[Row]:
    """Every row: raw aiormq (the baseline), the transport alone, the bus, and (with ``relay``)
    the outbox relay steady and in a burst; ``duration`` seconds per path and round."""
    created: list[str] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT + rounds * 3 * duration):
            samples = await measure_throughput(
                duration, rounds=rounds, publishers=publishers, prefetch=prefetch, created=created
            )
    finally:
        # The exchange and the queue of a path share its name.
        await cleanup(created, created)
    rows = throughput_rows(samples)
    if relay:
        async with asyncio.timeout(RUN_TIMEOUT + duration):
            rows += await measure_relay(
                duration, rate=relay_rate, burst=burst, prefetch=prefetch, raw_rate=rows[0].rate
            )
    return rows


def report(rows: list[Row]) -> None:
    """Print the rows, the ratio of the bus to the baseline and the baseline's name."""
    print(f"\n{'path':<24}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}  note")
    for r in rows:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        print(f"{r.name:<24}{r.rate:>9.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{ratio:>7}  {r.note}")
    by_name = {r.name: r for r in rows}
    bus, transport = by_name[TITLES["bus"]], by_name[TITLES["transport"]]
    print(f"\nratio core.bus ÷ raw aiormq (msg/s): {bus.ratio:.3f}   baseline: {BASELINE}")
    print(f"(of which the transport: AmqpTransport alone ÷ raw aiormq = {transport.ratio:.3f})")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark on uvloop, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the three paths")
    parser.add_argument("--publishers", type=int, default=64, help="concurrent publishers")
    parser.add_argument("--prefetch", type=int, default=32, help="consumer prefetch")
    parser.add_argument("--relay-rate", type=float, default=200.0, help="steady outbox events/s")
    parser.add_argument("--burst", type=int, default=2000, help="outbox events in the burst")
    parser.add_argument("--no-relay", action="store_true", help="skip the outbox relay rows")
    args = parser.parse_args(argv)
    numbers = (args.duration, args.rounds, args.publishers, args.prefetch, args.relay_rate)
    if min(*numbers, args.burst) <= 0:
        parser.error("every number must be positive")

    import uvloop

    try:
        rows = uvloop.run(
            measure_all(
                args.duration,
                rounds=args.rounds,
                publishers=args.publishers,
                prefetch=args.prefetch,
                relay_rate=args.relay_rate,
                burst=args.burst,
                relay=not args.no_relay,
            )
        )
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 1
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
