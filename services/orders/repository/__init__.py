"""All SQL of the orders service (asyncpg, parameterized only), one module per job.

- ``streams``: the event store (``order_events``), optimistic concurrency on append;
- ``sagas``: saga rows (``order_sagas``) and placement requests (``order_requests``);
- ``read_model``: the views (``order_views``), the inline projection, rebuilds, figures;
- ``payments``: the simulated payment provider's ledger (``payments``).

``OrdersRepository`` is the service's one handle on the first three.
"""

from __future__ import annotations

from services.orders.repository.payments import PaymentRecord, PaymentsLedger
from services.orders.repository.read_model import ReadModelStore
from services.orders.repository.sagas import SagaRow, SagaStore, StepChange
from services.orders.repository.streams import ConcurrentAppend, EventStore

__all__ = [
    "ConcurrentAppend",
    "OrdersRepository",
    "PaymentRecord",
    "PaymentsLedger",
    "SagaRow",
    "StepChange",
]


class OrdersRepository(EventStore, SagaStore, ReadModelStore):
    """Reads and writes the orders database: streams, sagas and the read model."""
