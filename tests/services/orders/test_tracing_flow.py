"""One order placed through the gateway is one trace: the gateway, the orders service, its price
read from the products service, and the saga across the real RabbitMQ (the reservation in the
products service, the payment and the confirmation in the orders service), every span a
descendant of the gateway's server span.

The gateway and both services run in this process (tracing on with the in-memory exporter),
on an exchange and queues of this test's own, deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from core import tracing
from core.bus.amqp import AmqpTransport
from core.testing import SpanRecorder, wait_for
from gateway import Settings as GatewaySettings
from gateway import create_gateway_app
from services.orders import Settings, create_orders_app
from services.products import Settings as ProductsSettings
from services.products import create_products_app
from tests.services.orders.conftest import issue
from tests.services.orders.helpers import ORDERS, order_body
from tests.services.products.conftest import Catalog
from tests.services.products.helpers import Client
from tests.services.products.test_events_amqp import AMQP_URL, delete_topology

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture
async def topology() -> AsyncIterator[tuple[str, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"test-trace-{suffix}", f"test-trace-products-{suffix}", f"test-trace-orders-{suffix}")
    yield names
    await delete_topology(*names)


def _base(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


def _service(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get(tracing.SERVICE_ATTRIBUTE)


# What the one trace must hold: (kind, name, service).
EXPECTED = {
    (SpanKind.SERVER, "POST /api/v1/orders{tail}", "gateway"),
    (SpanKind.CLIENT, "POST orders", "gateway"),
    (SpanKind.SERVER, "POST /api/v1/orders", "orders"),
    (SpanKind.CLIENT, "GET products", "orders"),
    (SpanKind.SERVER, "GET /api/v1/products/batch", "products"),
    (SpanKind.PRODUCER, "publish order.placed", "orders"),
    (SpanKind.CONSUMER, "process order.placed", "products"),  # the inventory reservation
    (SpanKind.PRODUCER, "publish inventory.reserved", "products"),
    (SpanKind.CONSUMER, "process inventory.reserved", "orders"),  # the saga's next step
    (SpanKind.PRODUCER, "publish payment.authorized", "orders"),  # the payment
    (SpanKind.PRODUCER, "publish order.confirmed", "orders"),  # the confirmation
}


async def test_one_order_through_the_gateway_is_one_trace(
    span_recorder: SpanRecorder,
    topology: tuple[str, str, str],
    service_client: Callable[[Any], Awaitable[Client]],
    products_settings: ProductsSettings,
    orders_settings: Settings,
    products_db: asyncpg.Connection,
    orders_db: asyncpg.Connection,
    redis_namespace: str,
) -> None:
    exchange, products_queue, orders_queue = topology
    products = await service_client(
        create_products_app(
            products_settings.model_copy(
                update={"bus_transport": "amqp", "bus_queue": products_queue}
            ),
            transport=AmqpTransport(AMQP_URL, exchange=exchange),
        )
    )
    orders = await service_client(
        create_orders_app(
            orders_settings.model_copy(
                update={
                    "bus_transport": "amqp",
                    "bus_queue": orders_queue,
                    "products_url": _base(products),
                }
            ),
            transport=AmqpTransport(AMQP_URL, exchange=exchange),
        )
    )
    gateway_settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        redis_namespace=redis_namespace,
        rate_limit_namespace=f"{redis_namespace}.gw-{uuid.uuid4().hex[:8]}",
        upstream_users=CLOSED,
        upstream_web=CLOSED,
        upstream_products=_base(products),
        upstream_orders=_base(orders),
        bus_transport="memory",
        log_level="WARNING",
    )
    gateway = await service_client(create_gateway_app(gateway_settings))
    admin = issue(orders_settings, ["admin", "customer"])
    customer = issue(orders_settings, ["customer"])
    catalog = Catalog(products, admin.headers)
    try:
        mug = await catalog.product(stock=5)
        span_recorder.clear()  # the set-up's own traces

        response = await gateway.post(
            ORDERS, json=order_body([(mug["id"], 2)]), headers=customer.headers
        )
        assert response.status == 202, await response.text()
        order_id = uuid.UUID((await response.json())["id"])
        catalog.orders.add(order_id)

        async def confirmed() -> bool:
            row = await orders_db.fetchrow(
                """
                SELECT s.step, v.status FROM order_sagas s JOIN order_views v ON v.id = s.order_id
                 WHERE s.order_id = $1
                """,
                order_id,
            )
            return row is not None and (row["step"], row["status"]) == ("done", "confirmed")

        await wait_for(confirmed, within=20)

        def found() -> set[tuple[SpanKind, str, Any]]:
            return {(s.kind, s.name, _service(s)) for s in span_recorder.spans}

        async def all_ended() -> set[tuple[SpanKind, str, Any]]:
            # The last publications are confirmed (and their spans end) after the commit.
            return EXPECTED - found()

        async def nothing_missing() -> bool:
            return not await all_ended()

        try:
            await wait_for(nothing_missing, within=10)
        except AssertionError:
            pytest.fail(f"spans missing: {await all_ended()}")
    finally:
        await catalog.cleanup(products_db)

    (root,) = [
        s for s in span_recorder.of_kind(SpanKind.SERVER) if s.name == "POST /api/v1/orders{tail}"
    ]
    assert root.parent is None
    assert root.context is not None
    trace = span_recorder.trace(root.context.trace_id)
    assert {(s.kind, s.name, _service(s)) for s in trace} >= EXPECTED
    # One tree: every span of the trace hangs from another of it, up to the gateway's.
    ids = {s.context.span_id for s in trace if s.context}
    assert all(s.parent is not None and s.parent.span_id in ids for s in trace if s is not root)
    # And no span of the flow started a trace of its own.
    for kind, name, _ in EXPECTED:
        for span in span_recorder.named(name):
            if span.kind == kind:
                assert span.context is not None
                assert span.context.trace_id == root.context.trace_id, span.name
    # The orders service continued the traceparent the gateway's client span sent.
    by_name = {s.name: s for s in trace}
    orders_server, client = by_name["POST /api/v1/orders"], by_name["POST orders"]
    assert orders_server.parent is not None
    assert client.context is not None
    assert orders_server.parent.span_id == client.context.span_id
    assert (client.attributes or {})["http.response.status_code"] == 202
