"""API8 (injection) and stored XSS: SQL, NoSQL, command and template injection strings in every
text field a client sends (names, descriptions, ``q``, ``sku``, attribute keys and values,
addresses, query parameters). Each must be refused (4xx) or stored and returned literally; never a
5xx, never an error body showing SQL or a traceback. A product named with markup is served
escaped by the dashboard, through the gateway.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from markupsafe import escape

from core.testing import assert_problem, wait_for
from tests.security.conftest import Session, User, assert_no_leak

PAYLOADS = (
    "' OR '1'='1",
    "'; DROP TABLE products; --",
    "1; SELECT pg_sleep(5)--",
    '" OR ""="',
    "' UNION SELECT email, password_hash FROM users --",
    "%' AND 1=0 UNION SELECT NULL--",
    "\\'; --",
    '{"$gt": ""}',
    '{"$where": "sleep(5000)"}',
    "$(cat /etc/passwd)",
    "`id`",
    "; rm -rf / #",
    "| nc 127.0.0.1 4444",
    "{{7*7}}",
    "${7*7}",
    "<%= 7*7 %>",
    "#{7*7}",
    "{{ config.items() }}",
    "{% raw %}x{% endraw %}",
    "../../../../etc/passwd",
    "%s%s%s%n",
    "<script>alert(1)</script>",
    "\u202e\u0041",
    ":(){ :|:& };:",
)
# Payloads that are valid as a slug or SKU: the rest of those fields must be refused.
SKU_PAYLOADS = ("a/../../etc/passwd", "x.y-z_1/../..", "A" * 64)


def _problem_or_literal(status: int, text: str) -> None:
    """A client error or a success; an error body shows no internals (a success echoes the
    client's own strings, SQL-looking ones included)."""
    assert status < 500, (status, text[:1000])
    if status >= 400:
        assert_no_leak(text)


async def _post(session: Session, path: str, body: Any, user: User | None) -> tuple[int, Any]:
    headers = user.headers if user else {}
    async with session.http.post(path, json=body, headers=headers) as response:
        text = await response.text()
        _problem_or_literal(response.status, text)
        if response.status >= 400:
            await assert_problem(response, response.status)
        return response.status, (await response.json(content_type=None)) if text else None


async def test_registration_and_profile_store_injection_literally(session: Session) -> None:
    for payload in PAYLOADS:
        email = f"inj-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": payload + "-long-enough", "full_name": payload}
        status, created = await _post(session, "/api/v1/auth/register", body, None)
        if status == 422:
            continue
        assert status == 201, (payload, created)
        assert created["full_name"] == payload, (payload, created)
        tokens = await session.login(email, payload + "-long-enough")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with session.http.patch(
            "/api/v1/users/me", json={"full_name": payload[::-1]}, headers=headers
        ) as response:
            _problem_or_literal(response.status, await response.text())
            if response.status == 200:
                assert (await response.json())["full_name"] == payload[::-1]
    # Login fields: always a plain 401 (or 422), whatever the string.
    for payload in PAYLOADS:
        status, _ = await _post(
            session, "/api/v1/auth/login", {"email": payload, "password": payload}, None
        )
        assert status in (401, 422), payload


async def test_nosql_operators_in_place_of_strings_are_refused(session: Session) -> None:
    for body in (
        {"email": {"$ne": None}, "password": {"$ne": None}},
        {"email": {"$gt": ""}, "password": "x" * 10},
        {"email": ["a@example.com"], "password": "x" * 10},
        {"email": "a@example.com", "password": {"$regex": ".*"}},
    ):
        status, _ = await _post(session, "/api/v1/auth/login", body, None)
        assert status == 422, body


async def test_catalog_text_fields_store_injection_literally(session: Session) -> None:
    manager = await session.user("catalog_manager")
    for payload in PAYLOADS:
        body = {
            "sku": f"SEC-{uuid.uuid4().hex[:10]}",
            "name": payload,
            "description": payload,
            "price_cents": 100,
            "attributes": {payload: payload, "k": [payload, {"nested": payload}]},
        }
        status, product = await _post(session, "/api/v1/products", body, manager)
        if status == 422:
            continue
        assert status == 201, (payload, product)
        async with session.http.get(f"/api/v1/products/{product['id']}") as response:
            stored = await response.json()
        for name in ("name", "description", "attributes"):
            assert stored[name] == body[name], (payload, name, stored)
        async with session.http.patch(
            f"/api/v1/products/{product['id']}",
            json={"name": payload[::-1], "description": payload[::-1]},
            headers=manager.headers,
        ) as response:
            _problem_or_literal(response.status, await response.text())
        category = {"name": payload, "slug": f"inj-{uuid.uuid4().hex[:10]}"}
        status, created = await _post(session, "/api/v1/categories", category, manager)
        if status == 201:
            assert created["name"] == payload
    for payload in (*PAYLOADS, *SKU_PAYLOADS):
        body = {"sku": payload, "name": "n", "price_cents": 1}
        status, product = await _post(session, "/api/v1/products", body, manager)
        assert status in (201, 409, 422), (payload, product)
        if status == 201:
            assert product["sku"] == payload
        status, _ = await _post(
            session, "/api/v1/categories", {"name": "n", "slug": payload}, manager
        )
        assert status in (409, 422), payload


@pytest.mark.parametrize("parameter", ["q", "sort", "category", "cursor", "min_price", "in_stock"])
async def test_query_parameters_never_reach_sql(session: Session, parameter: str) -> None:
    for payload in PAYLOADS:
        async with session.http.get("/api/v1/products", params={parameter: payload}) as response:
            text = await response.text()
            _problem_or_literal(response.status, text)
            if response.status == 200:
                assert parameter == "q", (parameter, payload)
                assert len((await response.json())["items"]) <= 20
            else:
                assert response.status == 422, (parameter, payload, text)


async def test_search_finds_an_injection_string_as_text(session: Session) -> None:
    admin = await session.user("admin")
    marker = f"zq{uuid.uuid4().hex[:8]}"
    product = await session.product(admin, name=f"{marker} ' OR 1=1 --")
    async with session.http.get("/api/v1/products", params={"q": f"{marker} ' OR 1=1 --"}) as r:
        assert r.status == 200
        assert product["id"] in [p["id"] for p in (await r.json())["items"]]
    async with session.http.get("/api/v1/products", params={"q": "' OR 1=1 --"}) as r:
        assert r.status == 200
        ids = [p["id"] for p in (await r.json())["items"]]
        assert len(ids) <= 20  # a page, and never "every row" by injection


async def test_order_addresses_and_tokens_store_injection_literally(session: Session) -> None:
    admin, customer = await session.user("admin"), await session.user()
    product = await session.product(admin)
    for payload in PAYLOADS:
        body = {
            "items": [{"product_id": product["id"], "quantity": 1}],
            "shipping_address": {"line1": payload, "city": payload, "name": payload},
            "payment": {"token": payload},
        }
        status, order = await _post(session, "/api/v1/orders", body, customer)
        if status == 422:
            continue
        assert status == 202, (payload, order)
        assert order["shipping_address"] == body["shipping_address"], (payload, order)
    for key in ("' OR 1=1", "$where", "{{7*7}}", "a;b"):
        body = {
            "items": [{"product_id": product["id"], "quantity": 1}],
            "shipping_address": {key: "x"},
            "payment": {"token": "tok_visa"},
        }
        status, _ = await _post(session, "/api/v1/orders", body, customer)
        assert status == 422, key


async def test_a_product_named_with_markup_is_served_escaped_on_the_dashboard(
    session: Session, http: aiohttp.ClientSession
) -> None:
    admin = await session.user("admin")
    marker = uuid.uuid4().hex[:8]
    name = f'<script>alert("{marker}")</script><img src=x onerror=alert(1)>'
    await session.product(admin, name=name, sku=f"X{marker}")
    escaped = str(escape(name))  # what Jinja's autoescape makes of it

    async def shown() -> str | None:
        async with http.get("/dashboard") as response:
            assert response.status == 200
            page = await response.text()
        return page if marker in page else None

    page = await wait_for(shown, within=20, interval=0.2)
    assert page is not None
    assert name not in page
    assert "<script>alert(" not in page
    assert "<img src=x" not in page
    assert escaped in page, page[-3000:]
