"""The connection supervisor of the AMQP transport: one connection, kept up forever.

A task connects, opens the publish channel, declares the exchange and lets its owner restore
the rest of the topology (``restore``), then waits for the connection to close and starts over
with ``core.retry.Backoff``, until ``stop``. Publishers, consumers and broadcast subscriptions
wait on ``ready`` and read ``connection``; they never connect by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.tools import censor_url
from yarl import URL

from core.bus.amqp.common import (
    BROKER_ERRORS,
    cancelled_by_caller,
    close_quietly,
    wait_closing,
)
from core.bus.transport import BusError
from core.retry import Backoff

__all__ = ["Link", "Restore"]

log = logging.getLogger("core.bus.amqp")

# Re-declares what the owner knows on a fresh connection; returns the (maybe new) channel.
Restore = Callable[[AbstractConnection, AbstractChannel], Awaitable[AbstractChannel]]


class Link:
    """The supervised connection: ``ready`` is set while it is up with its topology restored.

    ``backoff_base``/``backoff_cap`` bound the waits between attempts (``core.retry.Backoff``);
    ``connect_timeout`` bounds one attempt (connecting and restoring the topology).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        connect_timeout: float,
        backoff_base: float,
        backoff_cap: float,
        restore: Restore,
    ) -> None:
        self.url = url
        self.safe_url = str(censor_url(URL(url)))
        self.exchange = exchange
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.connection: AbstractConnection | None = None
        self.publish_channel: AbstractChannel | None = None
        self.ready = asyncio.Event()
        # Held while declaring queues, so that a consumer added meanwhile is not missed.
        self.topology_lock = asyncio.Lock()
        self._restore = restore
        self._first_attempt = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the supervisor runs (between ``start`` and ``stop``)."""
        return self._supervisor is not None

    @property
    def connected(self) -> bool:
        """Whether a connection is up and its topology restored."""
        connection = self.connection
        return self.ready.is_set() and connection is not None and not connection.is_closed

    def backoff(self) -> Backoff:
        """A fresh backoff with this link's bounds, for one retry loop."""
        return Backoff(base=self.backoff_base, cap=self.backoff_cap)

    async def start(self) -> None:
        """Start the supervisor and wait for its first attempt (not for its success)."""
        if self._supervisor is not None:
            return
        self._first_attempt.clear()
        self._supervisor = asyncio.create_task(self._supervise(), name="bus:amqp-supervisor")
        await self._first_attempt.wait()

    async def stop(self) -> None:
        """Stop the supervisor and close the connection."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        connection, self.connection = self.connection, None
        self.publish_channel = None
        self.ready.clear()
        if connection is not None and not connection.is_closed:
            await self.close_quietly(connection)

    async def close_quietly(self, resource: AbstractConnection | AbstractChannel) -> None:
        """Close ``resource`` within the connect timeout, ignoring a broker that is gone."""
        await close_quietly(resource, within=self.connect_timeout)

    async def open_channel(self, *, publisher_confirms: bool) -> AbstractChannel:
        """A new channel, waiting up to ``connect_timeout`` for the connection; ``BusError``
        when there is none."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.ready.wait()
                connection = self.connection
                if connection is None:
                    raise BusError("not connected to the broker")
                return await connection.channel(publisher_confirms=publisher_confirms)
        except TimeoutError as exc:
            raise BusError(f"no connection to the broker within {self.connect_timeout} s") from exc
        except BROKER_ERRORS as exc:
            raise BusError(f"cannot open a channel: {exc!r}") from exc

    async def _supervise(self) -> None:
        backoff = self.backoff()
        while True:
            try:
                connection = await self._connect()
            except asyncio.CancelledError:
                if cancelled_by_caller():
                    raise
                connection = None
                error: BaseException = ConnectionError("connection closed while connecting")
            except Exception as exc:  # any failure to connect is retried, forever
                connection, error = None, exc
            self._first_attempt.set()
            if connection is None:
                log.warning(
                    "cannot connect to %s (%r), attempt %d failed",
                    self.safe_url,
                    error,
                    backoff.failures + 1,
                )
                await backoff.wait()
                continue
            backoff.reset()
            log.info("connected to %s, topology restored", self.safe_url)
            await wait_closing(connection)
            self.ready.clear()
            if self.connection is connection:
                self.connection = None
                self.publish_channel = None
            closing = connection.closing
            reason = None if closing.cancelled() else closing.exception()
            log.warning("connection to %s lost (%r), reconnecting", self.safe_url, reason)
            await backoff.wait()

    async def _connect(self) -> AbstractConnection:
        """Connect, open the publish channel and restore the topology, within the timeout."""
        async with asyncio.timeout(self.connect_timeout):
            connection: AbstractConnection = await aiormq.connect(self.url)
        try:
            async with asyncio.timeout(self.connect_timeout):
                channel = await connection.channel(publisher_confirms=True)
                await channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                async with self.topology_lock:
                    channel = await self._restore(connection, channel)
                    self.connection = connection
                    self.publish_channel = channel
                    self.ready.set()
        except BaseException:
            await self.close_quietly(connection)
            raise
        return connection
