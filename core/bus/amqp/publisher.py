"""Publishing over AMQP: persistent messages on a publisher-confirm channel, bounded in time.

Every publish (including waiting for a connection while there is none) is bounded by
``publish_timeout`` and raises ``PublishError`` (``PublishTimeout`` without a confirm) instead
of hanging.
"""

from __future__ import annotations

import asyncio
import logging

from aiormq.abc import AbstractChannel
from pamqp import commands as spec

from core.bus.amqp.common import BROKER_ERRORS, cancelled_by_caller
from core.bus.amqp.connection import Link
from core.bus.transport import PublishError, PublishTimeout

__all__ = ["Publisher"]

log = logging.getLogger("core.bus.amqp")


class Publisher:
    """Publishes with confirms on the link's publish channel (re-opened if it closed alone)."""

    def __init__(self, link: Link, *, publish_timeout: float) -> None:
        self.link = link
        self.publish_timeout = publish_timeout
        self.accepting = False  # publish() allowed: between start() and the end of stop()
        self._channel_lock = asyncio.Lock()

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: spec.Basic.Properties,
        *,
        mandatory: bool = False,
    ) -> None:
        """Publish and wait for the broker's confirm, all within ``publish_timeout``."""
        if not self.accepting:
            raise PublishError("the AMQP transport is not running")
        link = self.link
        channel: AbstractChannel | None = link.publish_channel
        try:
            if link.ready.is_set() and channel is not None and not channel.is_closed:
                # Connected: aiormq's own timeout bounds the publish and its confirm.
                confirm = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                    timeout=self.publish_timeout,
                )
            else:
                channel = None
                async with asyncio.timeout(self.publish_timeout):
                    channel = await self._confirm_channel()
                    confirm = await channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=mandatory,
                    )
        except TimeoutError as exc:
            if channel is None:
                raise PublishError(
                    f"no connection to the broker within {self.publish_timeout} s"
                ) from exc
            raise PublishTimeout(
                f"no confirm for {routing_key!r} within {self.publish_timeout} s"
            ) from exc
        except asyncio.CancelledError:
            if cancelled_by_caller():
                raise
            raise PublishError(f"the connection closed while publishing {routing_key!r}") from None
        except BROKER_ERRORS as exc:
            raise PublishError(f"publishing {routing_key!r} failed: {exc!r}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise PublishError(f"the broker did not confirm {routing_key!r}: {confirm!r}")

    async def _confirm_channel(self) -> AbstractChannel:
        """The publish channel, waiting for the connection; re-opened if it closed alone."""
        link = self.link
        while True:
            await link.ready.wait()
            channel, connection = link.publish_channel, link.connection
            if channel is not None and not channel.is_closed:
                return channel
            if connection is None or connection.is_closed:
                # The supervisor is about to notice: wait for the next connection.
                link.ready.clear()
                continue
            async with self._channel_lock:
                if link.publish_channel is channel and link.connection is connection:
                    log.info("publish channel closed, opening a new one")
                    link.publish_channel = await connection.channel(publisher_confirms=True)
