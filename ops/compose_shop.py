"""Customers of the containerized system (``ops.compose_test``), through the published gateway.

``ReadLoad`` lists products without pause and counts the reads that failed; ``OrderLoad`` has
shoppers place orders one after another, each retried with its ``Idempotency-Key`` until the
gateway accepts it, and remembers which order each key got (``Ledger``). ``Ledger.account``
compares what the clients were told with what the orders database holds: an accepted order
missing from it is lost, an order of these shoppers that no key got is a duplicate (a retry
that made a second order). ``figures_table`` renders the run's figures as Markdown.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = [
    "API",
    "FINAL_STATUSES",
    "Accounting",
    "Ledger",
    "OrderLoad",
    "ReadLoad",
    "Shopper",
    "figures_table",
]

API = "/api/v1"
FINAL_STATUSES = frozenset({"confirmed", "rejected", "cancelled", "shipped"})
ACCEPTED = (200, 201, 202)


class Shopper:
    """One customer account: registers once, logs in again when its token is refused."""

    def __init__(self, base: str, tls: ssl.SSLContext, name: str) -> None:
        self.base = base
        self.tls = tls
        self.email = f"{name}-{uuid.uuid4().hex[:10]}@example.com"
        self.password = f"pw-{uuid.uuid4().hex}"
        self.token: str | None = None
        self.user_id: str | None = None

    async def call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        body: Any = None,
        key: str | None = None,
        auth: bool = True,
    ) -> tuple[int, Any]:
        """One request; the status and the JSON body (``None`` when there is none)."""
        headers = {"Idempotency-Key": key} if key else {}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with session.request(
            method, self.base + path, json=body, headers=headers, ssl=self.tls
        ) as answer:
            data = await answer.json(content_type=None) if answer.content_length != 0 else None
            return answer.status, data

    async def register(self, session: aiohttp.ClientSession) -> None:
        """Make the account and log in."""
        account = {"email": self.email, "password": self.password, "full_name": "Compose Test"}
        status, body = await self.call(session, "POST", f"{API}/auth/register", body=account)
        if status != 201:
            raise RuntimeError(f"register {self.email}: {status} {body}")
        self.user_id = str(body["id"])
        await self.login(session)

    async def login(self, session: aiohttp.ClientSession) -> None:
        """A new token."""
        credentials = {"email": self.email, "password": self.password}
        status, body = await self.call(
            session, "POST", f"{API}/auth/login", body=credentials, auth=False
        )
        if status != 200:
            raise RuntimeError(f"login {self.email}: {status} {body}")
        self.token = str(body["access_token"])


@dataclass
class Accounting:
    """What the clients were told against what the database holds."""

    placed: int  # keys whose order was accepted
    final: int  # of those, orders in a final status
    lost: list[str]  # accepted, not in the database
    duplicated: list[str]  # in the database for these shoppers, given to no key
    pending: list[str]  # accepted and present, not final

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or left pending."""
        return not (self.lost or self.duplicated or self.pending)


@dataclass
class Ledger:
    """Each idempotency key and the order it got; a key never gets two orders."""

    orders: dict[str, str] = field(default_factory=dict)  # key -> order id
    conflicts: list[str] = field(default_factory=list)  # keys answered with two order ids
    refused: int = 0  # answers that were not an acceptance (retried)
    abandoned: int = 0  # keys given up on (no acceptance before their deadline)

    def accept(self, key: str, order_id: str) -> None:
        """The gateway accepted ``key`` as ``order_id``."""
        known = self.orders.setdefault(key, order_id)
        if known != order_id:
            self.conflicts.append(key)

    def account(self, stored: Mapping[str, str]) -> Accounting:
        """Compare with ``stored``: every order of the ledger's shoppers, id -> status."""
        accepted = set(self.orders.values())
        lost = sorted(accepted - set(stored))
        duplicated = sorted(set(stored) - accepted) + sorted(self.conflicts)
        pending = sorted(i for i in accepted & set(stored) if stored[i] not in FINAL_STATUSES)
        final = sum(1 for i in accepted if stored.get(i) in FINAL_STATUSES)
        return Accounting(len(accepted), final, lost, duplicated, pending)


class ReadLoad:
    """``workers`` readers listing products until stopped, each every ``interval`` seconds (the
    gateway's default limit is 10 requests a second per address); counts reads and failures."""

    def __init__(
        self, base: str, tls: ssl.SSLContext, workers: int = 4, interval: float = 0.6
    ) -> None:
        self.base = base
        self.tls = tls
        self.workers = workers
        self.interval = interval
        self.reads = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the readers."""
        self._tasks = [asyncio.create_task(self._read()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Stop and wait for the readers."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _read(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                url = f"{self.base}{API}/products?limit=5&offset={self.reads % 20}"
                try:
                    async with session.get(url, ssl=self.tls) as answer:
                        await answer.read()
                        if answer.status != 200:
                            self.failures.append(f"{answer.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failures.append(type(exc).__name__)
                self.reads += 1
                await asyncio.sleep(self.interval)  # the pace of the load


class OrderLoad:
    """Shoppers placing orders one after another until stopped (each key retried until
    accepted, ``give_up`` seconds at most)."""

    def __init__(
        self,
        shoppers: Sequence[Shopper],
        product_ids: Sequence[str],
        *,
        give_up: float = 120.0,
        pause: float = 0.2,
    ) -> None:
        self.shoppers = shoppers
        self.product_ids = product_ids
        self.give_up = give_up
        self.pause = pause  # between two orders of one shopper: a pace, not a wait for a race
        self.ledger = Ledger()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the shoppers."""
        self._tasks = [asyncio.create_task(self._shop(s, i)) for i, s in enumerate(self.shoppers)]

    async def stop(self) -> None:
        """Let every shopper finish the order in hand (accepted or given up), then return."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _shop(self, shopper: Shopper, index: int) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            count = 0
            while not self._stop.is_set():
                product = self.product_ids[(index + count) % len(self.product_ids)]
                await self.place(session, shopper, product)
                count += 1
                await asyncio.sleep(self.pause)

    async def place(self, session: aiohttp.ClientSession, shopper: Shopper, product: str) -> None:
        """One order of ``product`` by ``shopper``, its key retried until accepted."""
        key = str(uuid.uuid4())
        order = {
            "items": [{"product_id": product, "quantity": 1}],
            "shipping_address": {"line1": "1 Container St", "city": "Springfield"},
            "payment": {"token": "tok_visa"},
        }
        deadline = time.monotonic() + self.give_up
        while time.monotonic() < deadline:
            try:
                if shopper.token is None:
                    await shopper.login(session)
                status, body = await shopper.call(
                    session, "POST", f"{API}/orders", body=order, key=key
                )
            except (aiohttp.ClientError, TimeoutError, RuntimeError):
                status, body = 0, None
            if status in ACCEPTED and isinstance(body, dict) and "id" in body:
                self.ledger.accept(key, str(body["id"]))
                return
            self.ledger.refused += 1
            if status == 401:
                shopper.token = None
            await asyncio.sleep(0.5)  # a client's back-off before the same request again
        self.ledger.abandoned += 1


def figures_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column Markdown table: what, figure."""
    lines = ["| what | figure |", "| --- | --- |"]
    lines += [f"| {what} | {figure} |" for what, figure in rows]
    return "\n".join(lines) + "\n"
