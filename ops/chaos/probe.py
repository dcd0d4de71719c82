"""Is the system answering normally? A customer of the run's own asks, through the gateway.

``Probe.healthy()`` holds when the gateway's ``/readyz`` answers 200 and an order placed now
(one unit of a product the probe keeps stocked) is confirmed within ``settle`` seconds: the
gateway, users (the token), products (the price, the reservation), orders (the saga, the
payment), the bus and the databases all did their part. The recovery time of a fault is how
long after its end the first such order is confirmed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Any

import aiohttp

__all__ = ["Probe"]

API = "/api/v1"
STOCK = 1_000_000


class ProbeError(Exception):
    """The probe could not do its part (not the system answering badly)."""


class Probe:
    """A customer and the admin of the system at ``base`` (the gateway)."""

    def __init__(self, base: str, admin: tuple[str, str], *, settle: float = 15.0) -> None:
        self.base = base
        self.admin = admin
        self.settle = settle
        self.email = f"chaos-probe-{uuid.uuid4().hex[:12]}@example.com"
        self.password = secrets.token_urlsafe(16)
        self.token: str | None = None
        self.product_id: str | None = None
        self.last = ""  # what the last failed attempt saw

    async def _call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        async with session.request(method, self.base + path, json=body, headers=sent) as answer:
            data = await answer.json(content_type=None) if answer.content_length != 0 else None
            return answer.status, data

    async def _login(self, session: aiohttp.ClientSession, email: str, password: str) -> str:
        credentials = {"email": email, "password": password}
        status, body = await self._call(session, "POST", f"{API}/auth/login", body=credentials)
        if status != 200:
            raise ProbeError(f"login of {email}: {status} {body}")
        return str(body["access_token"])

    async def setup(self) -> None:
        """Register the customer, and stock one product plentifully (as the admin)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            account = {"email": self.email, "password": self.password, "full_name": "Probe"}
            status, body = await self._call(session, "POST", f"{API}/auth/register", body=account)
            if status != 201:
                raise ProbeError(f"register: {status} {body}")
            self.token = await self._login(session, self.email, self.password)
            admin = await self._login(session, *self.admin)
            status, page = await self._call(session, "GET", f"{API}/products?limit=1")
            if status != 200 or not page["items"]:
                raise ProbeError(f"no product to order: {status} {page}")
            self.product_id = str(page["items"][0]["id"])
            path = f"{API}/products/{self.product_id}/inventory"
            status, body = await self._call(
                session, "PUT", path, body={"on_hand": STOCK}, token=admin
            )
            if status != 200:
                raise ProbeError(f"restock: {status} {body}")

    async def healthy(self) -> bool:
        """Whether ``/readyz`` is 200 and an order placed now is confirmed in time (``last``
        says what went wrong when not)."""
        timeout = aiohttp.ClientTimeout(total=self.settle)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return await self._order(session)
        except (aiohttp.ClientError, TimeoutError, ProbeError, ValueError) as exc:
            self.last = f"{type(exc).__name__}: {exc}"
            return False

    async def _order(self, session: aiohttp.ClientSession) -> bool:
        status, _ = await self._call(session, "GET", "/readyz")
        if status != 200:
            self.last = f"/readyz {status}"
            return False
        if self.token is None:
            self.token = await self._login(session, self.email, self.password)
        order = {
            "items": [{"product_id": self.product_id, "quantity": 1}],
            "shipping_address": {"line1": "1 Probe St", "city": "Springfield"},
            "payment": {"token": "tok_visa"},
        }
        key = {"Idempotency-Key": str(uuid.uuid4())}
        status, body = await self._call(
            session, "POST", f"{API}/orders", body=order, token=self.token, headers=key
        )
        if status == 401:
            self.token = None  # a new login next time (the session store may have restarted)
        if status not in (200, 201, 202):
            self.last = f"POST /orders {status}"
            return False
        deadline = time.monotonic() + self.settle
        while body.get("status") == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status, current = await self._call(
                session, "GET", f"{API}/orders/{body['id']}", token=self.token
            )
            if status == 200:
                body = current
        self.last = f"order {body.get('status')} ({body.get('reason')})"
        return bool(body.get("status") == "confirmed")
