"""``Transport.parked_count``: what a parking queue holds, on each transport (the ``parked``
figure of ``/readyz`` details)."""

from __future__ import annotations

from core.bus import Incoming, PermanentFailure, RetryPolicy
from core.testing import wait_for
from tests.core.bus.conftest import unique
from tests.core.bus.test_transport_contract import Harness, harness  # noqa: F401 - the fixture


async def test_parked_count_follows_the_parking_queue(harness: Harness) -> None:  # noqa: F811
    key, queue = unique("count"), harness.queue()

    async def handle(message: Incoming) -> None:
        raise PermanentFailure("never")

    await harness.consume(queue, [key], handle, retry=RetryPolicy((0.1,)))
    assert await harness.transport.parked_count(queue) == 0
    await harness.publish(key)
    await harness.publish(key)

    async def two() -> bool:
        return await harness.transport.parked_count(queue) == 2

    await wait_for(two, within=10)
    assert len(await harness.transport.parked(queue)) == 2  # counting took nothing away
    assert await harness.transport.replay(queue) == 2
    await wait_for(two, within=10)  # parked again, since they fail again
