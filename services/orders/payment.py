"""Payments behind an interface, and the built-in simulated provider.

A provider is idempotent per order: ``authorize`` called twice for one order charges once (and
answers the first outcome again); ``refund`` called twice refunds once. The saga relies on
that to retry a step after a crash without charging twice.

The simulated provider keeps its ledger in the ``payments`` table (``repository.payments``). Its
tokens (API.md): ``tok_visa`` is authorized, ``tok_decline`` is declined, ``tok_timeout`` never
answers (the call hangs until the caller gives up); any other token is declined. Since
``tok_visa`` is public, the provider has no place where money is real: ``AIOSHOP_ENV=production``
refuses it unless ``ORDERS_ALLOW_SIMULATED_PAYMENTS=true`` (see ``services.orders.settings``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal, Protocol

import asyncpg
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from services.orders.repository.payments import PaymentsLedger

__all__ = [
    "DECLINE_TOKEN",
    "SIMULATED_IN_PRODUCTION",
    "TIMEOUT_TOKEN",
    "VISA_TOKEN",
    "PaymentProvider",
    "PaymentResult",
    "RefundResult",
    "SimulatedPaymentProvider",
    "check_provider",
]

VISA_TOKEN = "tok_visa"  # noqa: S105 - test tokens of the simulated provider, not secrets
DECLINE_TOKEN = "tok_decline"  # noqa: S105
TIMEOUT_TOKEN = "tok_timeout"  # noqa: S105


SIMULATED_IN_PRODUCTION = (
    "AIOSHOP_ENV=production refuses the simulated payment provider (its public token tok_visa"
    " pays for any order); set ORDERS_ALLOW_SIMULATED_PAYMENTS=true only on a system that takes"
    " no real money"
)


def check_provider(*, env: str, allow_simulated: bool, provider: PaymentProvider | None) -> None:
    """Refuse to start with the simulated provider (``provider is None``) in production.

    Raised as a settings ``ValidationError``, so that an entry point reports it like any other
    invalid setting: one line, exit status 1.
    """
    if provider is None and env == "production" and not allow_simulated:
        raise ValidationError.from_exception_data(
            "Settings",
            [
                {
                    "type": PydanticCustomError(
                        "simulated_payments_refused", SIMULATED_IN_PRODUCTION
                    ),
                    "loc": (),
                    "input": None,
                }
            ],
        )


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """The provider's answer to an authorization."""

    status: Literal["authorized", "declined"]
    payment_id: uuid.UUID
    amount_cents: int


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A refunded payment (``first``: this call refunded it; else an earlier one did)."""

    payment_id: uuid.UUID
    amount_cents: int
    first: bool


class PaymentProvider(Protocol):
    """What the saga needs from a payment provider."""

    async def authorize(
        self, order_id: uuid.UUID, *, token: str, amount_cents: int, currency: str
    ) -> PaymentResult:
        """Hold ``amount_cents`` for the order (idempotent per order)."""
        ...

    async def refund(self, order_id: uuid.UUID) -> RefundResult | None:
        """Give back the order's authorized payment; ``None`` if nothing was charged."""
        ...


class SimulatedPaymentProvider:
    """A provider in the service's own database, for development and tests."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.ledger = PaymentsLedger(pool)

    async def authorize(
        self, order_id: uuid.UUID, *, token: str, amount_cents: int, currency: str
    ) -> PaymentResult:
        """See ``PaymentProvider``; ``tok_timeout`` waits until cancelled."""
        if token == TIMEOUT_TOKEN:
            await asyncio.Event().wait()  # never answers: the caller's deadline cancels it
        recorded = await self.ledger.authorize(
            order_id,
            payment_id=uuid.uuid4(),
            status="authorized" if token == VISA_TOKEN else "declined",
            amount_cents=amount_cents,
            currency=currency,
        )
        # A refunded payment was authorized first; its outcome was "authorized".
        outcome: Literal["authorized", "declined"] = (
            "declined" if recorded.status == "declined" else "authorized"
        )
        return PaymentResult(outcome, recorded.payment_id, recorded.amount_cents)

    async def refund(self, order_id: uuid.UUID) -> RefundResult | None:
        """See ``PaymentProvider``."""
        before = await self.ledger.refund(order_id)
        if before is None or before.status == "declined":
            return None
        return RefundResult(
            before.payment_id, before.amount_cents, first=before.status == "authorized"
        )
