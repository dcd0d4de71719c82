"""Order sagas as the dashboard follows them: each order's status and steps, from its events.

``Sagas.apply`` takes the order, inventory and payment events; an event without an order id is
tied to its order by correlation id. The last ``limit`` sagas are kept for the view, and every
order seen (bounded) for the business figures (``web.business``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.bus import Envelope
from web.values import iso, number

__all__ = ["SagaState", "Sagas"]

# Saga steps by event type: (label, kind); kind is ok, fail or compensate.
_STEPS: dict[str, tuple[str, str]] = {
    "order.placed": ("placed", "ok"),
    "inventory.reserved": ("reserved", "ok"),
    "inventory.reservation_failed": ("reservation failed", "fail"),
    "payment.authorized": ("authorized", "ok"),
    "payment.declined": ("payment declined", "fail"),
    "order.confirmed": ("confirmed", "ok"),
    "order.rejected": ("rejected", "fail"),
    "inventory.released": ("released", "compensate"),
    "payment.refunded": ("refunded", "compensate"),
    "order.cancelled": ("cancelled", "compensate"),
    "order.shipped": ("shipped", "ok"),
}
_STATUS: dict[str, str] = {
    "order.placed": "pending",
    "order.confirmed": "confirmed",
    "order.rejected": "rejected",
    "order.cancelled": "cancelled",
    "order.shipped": "shipped",
}
_FINAL = frozenset({"rejected", "cancelled", "shipped"})
_MAX_ORDERS_COUNTED = 100_000


@dataclass
class SagaState:
    """One order's saga as its events arrive."""

    order_id: str
    first_seen: float
    correlation_id: str | None = None
    status: str = "pending"
    reason: str | None = None
    total_cents: int | None = None
    currency: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)


class Sagas:
    """The last ``limit`` order sagas, oldest first, and every order seen (bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sagas: OrderedDict[str, SagaState] = OrderedDict()
        self._by_correlation: dict[str, str] = {}
        # Every order seen: (status, total_cents, currency), bounded, for the business figures.
        self._orders: OrderedDict[str, tuple[str, int | None, str]] = OrderedDict()

    @property
    def orders(self) -> Iterable[tuple[str, int | None, str]]:
        """Every order seen (bounded): its status, total in cents and currency."""
        return self._orders.values()

    def apply(self, envelope: Envelope, now: float) -> None:
        """Take one (validated) event; anything but an order, inventory or payment event of a
        known order is ignored."""
        data = envelope.data
        if envelope.type.split(".", 1)[0] not in ("order", "inventory", "payment"):
            return
        order_id = data.get("order_id")
        if order_id is None and envelope.correlation_id:
            order_id = self._by_correlation.get(envelope.correlation_id)
        if order_id is None:
            return  # stock changes of no order (an admin's PUT)
        order_id = str(order_id)
        saga = self.sagas.get(order_id)
        if saga is None:
            if envelope.type == "inventory.changed":
                return  # a stock echo of an order the dashboard has not seen
            saga = self.sagas[order_id] = SagaState(order_id, now)
            while len(self.sagas) > self.limit:
                _, dropped = self.sagas.popitem(last=False)
                if dropped.correlation_id:
                    self._by_correlation.pop(dropped.correlation_id, None)
        if saga.correlation_id is None and envelope.correlation_id:
            saga.correlation_id = envelope.correlation_id
            self._by_correlation[envelope.correlation_id] = order_id
        total = number(data.get("total_cents"))
        if envelope.type.startswith("order.") and total is not None:
            saga.total_cents = int(total)
            saga.currency = str(data.get("currency") or saga.currency or "USD")
        status = _STATUS.get(envelope.type)
        # Events may arrive out of order: a placement never undoes a later status, and nothing
        # moves an order out of a final one.
        if (
            status is not None
            and saga.status not in _FINAL
            and not (status == "pending" and saga.status != "pending")
        ):
            saga.status = status
        self._orders[order_id] = (saga.status, saga.total_cents, saga.currency or "USD")
        if len(self._orders) > _MAX_ORDERS_COUNTED:
            self._orders.popitem(last=False)
        reason = data.get("reason")
        if isinstance(reason, str) and envelope.type != "inventory.changed" and not saga.reason:
            saga.reason = reason
        if envelope.type == "inventory.changed":
            return  # the stock side of a step already shown
        label, kind = _STEPS.get(envelope.type, (envelope.type.split(".", 1)[1], "ok"))
        saga.steps.append(
            {
                "type": envelope.type,
                "label": label,
                "kind": kind,
                "at": iso(envelope.occurred_at),
                "source": envelope.source,
                "reason": reason if isinstance(reason, str) else None,
            }
        )
        saga.steps.sort(key=lambda step: str(step["at"]))

    def views(self, *, full: bool, pseudonym: Callable[[str, str], str]) -> list[dict[str, Any]]:
        """The sagas as the view shows them, newest first; without the correlation id and with
        the order id replaced by ``pseudonym(order_id, "o-")`` unless ``full``."""
        return [_saga_view(saga, full, pseudonym) for saga in reversed(self.sagas.values())]


def _saga_view(saga: SagaState, full: bool, pseudonym: Callable[[str, str], str]) -> dict[str, Any]:
    return {
        "order_id": saga.order_id if full else pseudonym(saga.order_id, "o-"),
        "correlation_id": saga.correlation_id if full else None,
        "status": saga.status,
        "reason": saga.reason,
        "total_cents": saga.total_cents,
        "currency": saga.currency,
        "steps": list(saga.steps),
    }
