"""The archive's subscriber over the real RabbitMQ (an isolated exchange and queue): what is
published ends up in the archive once, through redeliveries and while the archive is down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest

from core.archive import ArchivePage, ArchiveSubscriber, ArchiveUnavailable, PostgresArchive
from core.bus import Bus, Envelope, RetryPolicy
from core.bus.amqp import AmqpTransport
from core.retry import Backoff
from core.testing import BusKit, wait_for
from tests.core.archive.conftest import postgres_archive

FAST_RETRY = RetryPolicy((0.05, 0.05, 0.05))


class Faulty:
    """The real archive behind a fault: ``fail_before`` calls raise before storing,
    ``fail_after`` calls raise after storing (the acknowledgement is lost: a redelivery)."""

    def __init__(
        self,
        archive: PostgresArchive,
        *,
        fail_before: int = 0,
        fail_after: int = 0,
        before: type[Exception] = ArchiveUnavailable,
        script: Sequence[type[Exception]] = (),
        hold: bool = False,
    ) -> None:
        self.archive = archive
        self.fail_before, self.fail_after, self.before = fail_before, fail_after, before
        self.script = list(script)  # raised in turn by the first calls, before the write
        self.hold = hold  # the first write, once done, waits for ``release``
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0
        self.stored = 0
        self.sizes: list[int] = []

    async def store(self, envelopes: Sequence[Mapping[str, Any]]) -> int:
        self.calls += 1
        self.sizes.append(len(envelopes))
        if self.script:
            raise self.script.pop(0)("injected before the write")
        if self.fail_before > 0:
            self.fail_before -= 1
            raise self.before("injected before the write")
        new = await self.archive.store(envelopes)
        self.stored += len(envelopes)
        if self.hold and not self.held.is_set():
            self.held.set()
            await self.release.wait()
        if self.fail_after > 0:
            self.fail_after -= 1
            raise RuntimeError("injected after the write")
        return new

    async def is_held(self) -> bool:
        """Whether the first write is done and waits for ``release``."""
        return self.held.is_set()

    async def query(self, **filters: Any) -> ArchivePage:
        return await self.archive.query(**filters)

    async def purge(self, older_than: datetime) -> int:
        return await self.archive.purge(older_than)

    async def close(self) -> None:
        await self.archive.close()


@pytest.fixture
async def archive() -> AsyncIterator[PostgresArchive]:
    async with postgres_archive() as archive:
        yield archive


def _subscriber(target: Any, **options: Any) -> ArchiveSubscriber:
    return ArchiveSubscriber(
        target, batch_size=50, batch_delay=0.01, backoff=Backoff(base=0.01, cap=0.05), **options
    )


async def _run(kit: BusKit, target: Any) -> tuple[ArchiveSubscriber, str]:
    subscriber = _subscriber(target)
    queue = kit.name("archive")
    bus = kit.bus("archiver")
    subscriber.subscribe(bus, queue=queue, retry=FAST_RETRY)
    subscriber.start()
    await bus.start()
    return subscriber, queue


def _envelope(event_type: str, flow: str, n: int) -> Envelope:
    return Envelope(type=event_type, source="test", correlation_id=flow, data={"n": n})


async def _archived(archive: PostgresArchive, flow: str) -> list[dict[str, Any]]:
    return (await archive.query(correlation_id=flow)).items


async def test_every_event_is_archived_once_even_when_redelivered(
    amqp_bus_kit: BusKit, archive: PostgresArchive
) -> None:
    """A delivery stored but not acknowledged (its consumer stopped meanwhile) comes back from
    the broker to the next consumer: stored again, it is still in the archive once."""
    faulty = Faulty(archive, hold=True)  # the first write, once done, hangs before the ack
    writes: list[tuple[int, int]] = []
    subscriber = _subscriber(faulty, on_stored=lambda total, new: writes.append((total, new)))
    queue = amqp_bus_kit.name("archive")
    # The first consumer's own transport, to stop it (and cancel its handler) quickly.
    transport = AmqpTransport(
        amqp_bus_kit.amqp_url,
        exchange=amqp_bus_kit.exchange,
        reconnect_delays=(0.05, 0.5),
        drain_timeout=0.1,
    )
    first = Bus(transport, source="archiver-1")
    subscriber.subscribe(first, queue=queue, retry=FAST_RETRY)
    subscriber.start()
    await first.start()
    flow = uuid.uuid4().hex
    sent = _envelope("order.placed", flow, 0)
    try:
        await amqp_bus_kit.publish_envelope(sent)
        await wait_for(faulty.is_held, within=10)  # stored, not acknowledged
        await first.stop()  # its handler is cancelled: the message stays unacknowledged
        faulty.release.set()  # the write of the cancelled delivery completes after all

        second = amqp_bus_kit.bus("archiver-2")
        subscriber.subscribe(second, queue=queue, retry=FAST_RETRY)
        await second.start()

        async def redelivered_and_stored_again() -> bool:
            return (1, 0) in writes  # the broker's redelivery, a duplicate for the archive

        await wait_for(redelivered_and_stored_again, within=10)
        assert faulty.stored == 2
        assert await _archived(archive, flow) == [sent.model_dump(mode="json")]
        assert await amqp_bus_kit.parked(queue) == []
    finally:
        await first.stop()
        await subscriber.stop()


async def test_the_same_event_published_twice_is_archived_once(
    amqp_bus_kit: BusKit, archive: PostgresArchive
) -> None:
    faulty = Faulty(archive, fail_after=1)  # the first batch is stored, then its write fails
    subscriber, queue = await _run(amqp_bus_kit, faulty)
    flow = uuid.uuid4().hex
    sent = [_envelope(t, flow, n) for n, t in enumerate(["order.placed", "payment.authorized"])]
    try:
        for envelope in sent:
            await amqp_bus_kit.publish_envelope(envelope)
        await amqp_bus_kit.publish_envelope(sent[0])  # the same event published twice

        async def all_written_again() -> bool:
            return faulty.stored >= len(sent) + 1 and len(await _archived(archive, flow)) == 2

        await wait_for(all_written_again, within=10)
        archived = await _archived(archive, flow)
        assert archived == [e.model_dump(mode="json") for e in sent]
        assert await amqp_bus_kit.parked(queue) == []
    finally:
        await subscriber.stop()


async def test_a_delivery_cancelled_during_its_write_does_not_stop_the_writer(
    archive: PostgresArchive,
) -> None:
    faulty = Faulty(archive, hold=True)
    subscriber = _subscriber(faulty)
    subscriber.start()
    flow = uuid.uuid4().hex
    try:
        delivery = asyncio.create_task(subscriber.add(_envelope("order.placed", flow, 0)))
        await wait_for(faulty.is_held, within=10)
        delivery.cancel()  # the bus's drain timeout, while the batch is being stored
        with pytest.raises(asyncio.CancelledError):
            await delivery
        faulty.release.set()
        async with asyncio.timeout(10):  # hangs for ever once the writer is dead
            await subscriber.add(_envelope("order.placed", flow, 1))
        assert len(await _archived(archive, flow)) == 2
    finally:
        await subscriber.stop()


async def test_the_database_going_away_while_writing_one_by_one_fails_no_delivery(
    archive: PostgresArchive,
) -> None:
    """The batch is refused (one by one then), and the database drops in the middle: retried in
    place, as for a batch; no delivery fails into the retry ladder (and parking)."""
    faulty = Faulty(
        archive, script=[RuntimeError, ArchiveUnavailable, ArchiveUnavailable, ArchiveUnavailable]
    )
    subscriber = _subscriber(faulty)
    subscriber.start()
    flow = uuid.uuid4().hex
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(
                *(subscriber.add(_envelope("order.placed", flow, n)) for n in range(3))
            )
        assert faulty.sizes[0] == 3  # one batch, refused, then written one by one
        assert set(faulty.sizes[1:]) == {1}
        assert len(await _archived(archive, flow)) == 3
    finally:
        await subscriber.stop()


async def test_nothing_is_lost_while_the_archive_is_down(
    amqp_bus_kit: BusKit, archive: PostgresArchive
) -> None:
    faulty = Faulty(archive, fail_before=5)  # five writes in a row find the database down
    subscriber, queue = await _run(amqp_bus_kit, faulty)
    flow = uuid.uuid4().hex
    sent = [_envelope("order.placed", flow, n) for n in range(20)]
    try:
        for envelope in sent:
            await amqp_bus_kit.publish_envelope(envelope)

        async def all_archived() -> bool:
            return len(await _archived(archive, flow)) == 20

        await wait_for(all_archived, within=10)
        assert faulty.calls > 5
        assert await amqp_bus_kit.parked(queue) == []  # an outage parks nothing
    finally:
        await subscriber.stop()


async def test_one_bad_envelope_does_not_hold_the_batch(
    amqp_bus_kit: BusKit, archive: PostgresArchive
) -> None:
    """PostgreSQL refuses a NUL character in JSONB: that envelope's batch is refused whole, then
    stored one by one; only the bad one goes through the retry ladder to parking."""
    subscriber, queue = await _run(amqp_bus_kit, archive)
    flow = uuid.uuid4().hex
    good = [_envelope("order.placed", flow, n) for n in range(4)]
    bad = Envelope(type="order.placed", source="test", correlation_id=flow, data={"note": "a\x00"})
    try:
        for envelope in [*good[:2], bad, *good[2:]]:
            await amqp_bus_kit.publish_envelope(envelope)

        async def bad_one_parked() -> list[Any]:
            return await amqp_bus_kit.parked(queue)

        (parked,) = await wait_for(bad_one_parked, within=10)
        assert parked.message_id == str(bad.id)
        assert parked.attempts == len(FAST_RETRY.delays) + 1
        archived = await _archived(archive, flow)
        assert sorted(e["id"] for e in archived) == sorted(str(e.id) for e in good)
    finally:
        await subscriber.stop()


async def test_metrics_snapshots_are_left_out(
    amqp_bus_kit: BusKit, archive: PostgresArchive
) -> None:
    subscriber, _ = await _run(amqp_bus_kit, archive)
    flow = uuid.uuid4().hex
    try:
        # Delivered in order, and an excluded type returns before the next one is queued: once
        # the later event is archived, a snapshot that were not excluded would be too.
        await amqp_bus_kit.publish_envelope(_envelope("metrics.snapshot", flow, 0))
        await amqp_bus_kit.publish_envelope(_envelope("order.placed", flow, 1))

        async def archived() -> list[dict[str, Any]]:
            return await _archived(archive, flow)

        items = await wait_for(archived, within=10)
        assert [e["type"] for e in items] == ["order.placed"]
        assert subscriber.excluded("metrics.snapshot")
        assert not subscriber.excluded("metrics.snapshots.more")
    finally:
        await subscriber.stop()
