"""Load scenarios for the whole system, through the gateway (Locust).

Start the system in one terminal, then run the load from the project root::

    RATE_LIMIT_DEFAULT=1000000/60 RATE_LIMIT_AUTH=1000000/60 \\
        ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=a-long-password make run
    ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=a-long-password make load
    .venv/bin/locust -f perf/locustfile.py --host http://127.0.0.1:8000    # the web UI instead

Who visits (``weight``: their share of the simulated users; think times between page views):

- ``Browser`` (10): anonymous; the category menu, a filtered listing, two or three product
  pages, then the strip of recently viewed products (a batch read);
- ``Searcher`` (4): anonymous; full-text searches (``q=``), opening a result;
- ``Member`` (2): registers and logs in, reads its profile (``/users/me``), browses;
- ``Buyer`` (3): registers and logs in, picks an in-stock product, places an order with a fresh
  ``Idempotency-Key``, polls it until the saga settles, cancels every third one (the first
  included), lists its orders;
- ``Admin`` (exactly one): logs in with the credentials of ``AIOSHOP_ADMIN_EMAIL`` and
  ``AIOSHOP_ADMIN_PASSWORD`` (else ``ADMIN_EMAIL`` and ``ADMIN_PASSWORD``, the variables with
  which ``make run`` creates that admin; or ``aioshop create-admin``) and restocks sold-out or
  random products; left out when neither pair is set.

Product and category ids come from the listing when the first user starts, never from this
file. Requests are named by route template (``/api/v1/products/{id}``), so the statistics have
one row per route. Signed-in users send ``Authorization: Bearer <access token>``, refresh the
pair 30 s before the access token expires (``AIOSHOP_LOAD_REFRESH_AFTER``: after that many
seconds instead) and once on a 401, then retry. ``AIOSHOP_LOAD_THINK`` scales every think time
(default 1; 0.2: five times as impatient, 0: flat out).

Expected answers that are not 2xx count as successes: a 409 when cancelling an order the saga
rejected (only ``pending`` and ``confirmed`` orders cancel), a 409 when a restock races a
reservation, a 401 answered by refreshing the token.

The gateway limits each client address (600 requests a minute, 10 logins and registrations),
and every simulated user comes from this machine: a load test needs the limits raised as above,
or most requests are 429s (the failures say so).
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, User, between, task
from locust.exception import StopUser  # deptry: ignore[DEP004]

__all__ = ["Admin", "Browser", "Buyer", "Member", "Searcher"]

log = logging.getLogger("perf.locustfile")

# Request names: one row of the statistics per route template.
CATEGORIES = "/api/v1/categories"
PRODUCTS = "/api/v1/products"
SEARCH = "/api/v1/products?q="
PRODUCT = "/api/v1/products/{id}"
BATCH = "/api/v1/products/batch"
INVENTORY = "/api/v1/products/{id}/inventory"
REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"
ORDERS = "/api/v1/orders"
ORDER = "/api/v1/orders/{id}"
CANCEL = "/api/v1/orders/{id}/cancel"

# Words of the demo catalog (services/products/seed.py), and one that finds nothing.
SEARCH_TERMS = ("lamp", "mug", "wireless", "leather", "oak", "tent", "headphones", "notebook",
                "chair", "portable", "ceramic", "boots", "board game", "desk lamp", "yoga mat",
                "zeppelin")  # fmt: skip
SORTS = (None, "price", "-price", "name", "-created_at")
CITIES = ("Springfield", "Shelbyville", "Ogdenville", "North Haverbrook", "Capital City")
REFRESH_MARGIN = 30.0  # seconds before the access token expires


def _admin_credentials() -> tuple[str, str] | None:
    for prefix in ("AIOSHOP_ADMIN_", "ADMIN_"):
        email, password = os.environ.get(f"{prefix}EMAIL"), os.environ.get(f"{prefix}PASSWORD")
        if email and password:
            return email, password
    return None


ADMIN_CREDENTIALS = _admin_credentials()
REFRESH_AFTER = float(os.environ.get("AIOSHOP_LOAD_REFRESH_AFTER", "0")) or None
THINK_SCALE = float(os.environ.get("AIOSHOP_LOAD_THINK", "1"))


def think(low: float = 1.0, high: float = 3.0) -> None:
    """A person reading the page before the next click (gevent makes this sleep cooperative)."""
    time.sleep(random.uniform(low, high) * THINK_SCALE)


def pause(low: float, high: float) -> Callable[[User], float]:
    """The wait between two visits of a user (``between``, scaled like ``think``)."""
    return between(low * THINK_SCALE, high * THINK_SCALE)


class Catalog:
    """Product and category ids, read from the listing once, by the first user that starts."""

    PAGES = 5  # of 100 products

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a gevent lock: locust has monkey-patched threading
        self.loaded = False
        self.product_ids: list[str] = []
        self.category_ids: list[str] = []

    def load(self, user: ApiUser) -> None:
        """Page through the listing (in-stock products) and the categories, once."""
        with self._lock:
            if self.loaded:
                return
            body = user.call("GET", f"{CATEGORIES}?limit=100", CATEGORIES, auth=False)
            self.category_ids = [c["id"] for c in body["items"]] if body else []
            cursor: str | None = None
            for _ in range(self.PAGES):
                query = {"in_stock": "true", "limit": 100, **({"cursor": cursor} if cursor else {})}
                page = user.call("GET", f"{PRODUCTS}?{urlencode(query)}", PRODUCTS, auth=False)
                if page is None:
                    break
                self.product_ids += [p["id"] for p in page["items"]]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            if not self.product_ids:
                log.error(
                    "no product in stock at %s: seed the catalog (aioshop up --demo N)", user.host
                )
                raise StopUser
            log.info(
                "catalog: %d products in stock, %d categories",
                len(self.product_ids),
                len(self.category_ids),
            )
            if ADMIN_CREDENTIALS is None:
                log.warning(
                    "AIOSHOP_ADMIN_EMAIL/AIOSHOP_ADMIN_PASSWORD (or ADMIN_EMAIL/ADMIN_PASSWORD) "
                    "unset: no admin restocks inventory in this run"
                )
            self.loaded = True

    def products(self, k: int = 1) -> list[str]:
        """``k`` distinct random product ids."""
        return random.sample(self.product_ids, k=min(k, len(self.product_ids)))


CATALOG = Catalog()
_warned: set[str] = set()  # the warnings given once per run


@dataclass
class Tokens:
    """A user's token pair, and when (``time.monotonic()``) to refresh it."""

    access: str
    refresh: str
    refresh_at: float

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Tokens:
        """The pair of a login or refresh answer."""
        expires_in = float(body.get("expires_in") or 900)
        lifetime = REFRESH_AFTER or max(expires_in - REFRESH_MARGIN, expires_in / 2)
        return cls(body["access_token"], body["refresh_token"], time.monotonic() + lifetime)


def _body(response: Any) -> Any:
    """The JSON body of ``response``, ``{}`` when it has none."""
    return json.loads(response.content) if response.content else {}


def _problem(response: Any) -> str:
    """A short failure message (no correlation id: locust groups failures by message)."""
    try:
        body = _body(response)
        title = body.get("title") or ""
        # A validation problem's first error type says which rule (e.g. unknown_product).
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict) and errors[0].get("type"):
            title = f"{title} ({errors[0]['type']})"
    except (ValueError, AttributeError):
        title = ""
    return f"HTTP {response.status_code} {title}".strip()


class ApiUser(FastHttpUser):
    """A client of the gateway: requests named by route, bearer auth with refresh."""

    abstract = True
    tokens: Tokens | None = None
    email: str = ""
    password: str = ""

    def on_start(self) -> None:
        """Read the catalog's ids, once for all users."""
        CATALOG.load(self)

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] = (),
        auth: bool = True,
    ) -> Any:
        """Send one request; its JSON body on success (2xx or a status of ``expected``), else
        ``None`` (the failure is recorded). With ``auth``, sends the access token, refreshing it
        first when due, and once more after refreshing on a 401."""
        for attempt in (1, 2):
            sent = dict(headers or {})
            if auth:
                if self.tokens is None or time.monotonic() >= self.tokens.refresh_at:
                    self.refresh()
                assert self.tokens is not None
                sent["Authorization"] = f"Bearer {self.tokens.access}"
            with self.client.request(
                method, path, name=name, json=body, headers=sent, catch_response=True
            ) as response:
                status = response.status_code
                if status == 401 and auth and attempt == 1:
                    # Expected: the access token expired or was revoked early; a real client
                    # refreshes it and sends the request again.
                    response.success()
                elif 200 <= status < 300 or status in expected:
                    response.success()
                    return _body(response)
                else:
                    response.failure(_problem(response))
                    if status == 429:
                        _warn_rate_limited()
                    return None
            self.refresh(force=True)
        return None

    def register_and_login(self) -> None:
        """A new account (random email and password), then its token pair."""
        self.email = f"load-{uuid.uuid4().hex[:16]}@example.com"
        self.password = secrets.token_urlsafe(12)
        account = {"email": self.email, "password": self.password, "full_name": "Load Tester"}
        if self.call("POST", REGISTER, REGISTER, body=account, auth=False) is None:
            raise StopUser
        self.login()

    def login(self) -> None:
        """Log in with ``email`` and ``password``; stop this user if that fails."""
        credentials = {"email": self.email, "password": self.password}
        body = self.call("POST", LOGIN, LOGIN, body=credentials, auth=False)
        if body is None:
            raise StopUser
        self.tokens = Tokens.from_body(body)

    def refresh(self, *, force: bool = False) -> None:
        """Exchange the refresh token for a new pair (log in again if it is refused)."""
        if self.tokens is None:
            self.login()
            return
        if not force and time.monotonic() < self.tokens.refresh_at:
            return
        grant = {"refresh_token": self.tokens.refresh}
        body = self.call("POST", REFRESH, REFRESH, body=grant, auth=False)
        if body is None:
            self.login()
        else:
            self.tokens = Tokens.from_body(body)

    def listing(self, *, auth: bool = False, **query: Any) -> list[dict[str, Any]]:
        """One page of ``GET /api/v1/products`` with ``query``; its items."""
        page = self.call("GET", f"{PRODUCTS}?{urlencode(query)}", PRODUCTS, auth=auth)
        return list(page["items"]) if page else []

    def product(self, product_id: str, *, auth: bool = False) -> dict[str, Any] | None:
        """``GET /api/v1/products/{id}``."""
        found: dict[str, Any] | None = self.call(
            "GET", f"{PRODUCTS}/{product_id}", PRODUCT, auth=auth
        )
        return found


def _warn_rate_limited() -> None:
    if "429" not in _warned:
        _warned.add("429")
        log.warning(
            "the gateway answers 429: every simulated user comes from one address; start the "
            "system with RATE_LIMIT_DEFAULT=1000000/60 RATE_LIMIT_AUTH=1000000/60"
        )


def _filters() -> dict[str, Any]:
    """What a visitor picks on a listing page: a category, in stock only, a sort, a price."""
    query: dict[str, Any] = {"limit": 20}
    if CATALOG.category_ids and random.random() < 0.7:
        query["category"] = random.choice(CATALOG.category_ids)
    if random.random() < 0.6:
        query["in_stock"] = "true"
    sort = random.choice(SORTS)
    if sort:
        query["sort"] = sort
    if random.random() < 0.2:
        low = random.choice((0, 1000, 2500, 5000))
        query |= {"min_price": low, "max_price": low * 4 + 5000}
    return query


class Browser(ApiUser):
    """An anonymous visitor browsing the catalog."""

    weight = 10
    wait_time = pause(3, 10)  # between two visits

    @task
    def visit(self) -> None:
        """Menu, a filtered listing, two or three product pages, recently viewed (batch)."""
        self.call("GET", f"{CATEGORIES}?limit=100", CATEGORIES, auth=False)
        think()
        ids = [item["id"] for item in self.listing(**_filters())]
        candidates = random.sample(ids, k=min(len(ids), 3)) or CATALOG.products(3)
        viewed = []
        for product_id in candidates[: random.randint(2, 3)]:
            think()
            if self.product(product_id) is not None:
                viewed.append(product_id)
        if len(viewed) >= 2:
            think(0.5, 1.5)
            query = urlencode({"ids": ",".join(viewed)})
            self.call("GET", f"{BATCH}?{query}", BATCH, auth=False)


class Searcher(ApiUser):
    """An anonymous visitor who searches, and opens a result."""

    weight = 4
    wait_time = pause(2, 8)

    @task
    def search(self) -> None:
        """A full-text search, sometimes in stock only or by price; the first hit opened."""
        query: dict[str, Any] = {"q": random.choice(SEARCH_TERMS), "limit": 20}
        if random.random() < 0.3:
            query["in_stock"] = "true"
        if random.random() < 0.2:
            query["sort"] = random.choice(("price", "-price"))
        page = self.call("GET", f"{PRODUCTS}?{urlencode(query)}", SEARCH, auth=False)
        hits = page["items"] if page else []
        if hits:
            think()
            self.product(random.choice(hits[:5])["id"])


class Member(ApiUser):
    """A customer who signs up, then comes back to the profile while browsing."""

    weight = 2
    wait_time = pause(3, 10)

    def on_start(self) -> None:
        """The catalog's ids, a new account, and the profile the app shows after login."""
        super().on_start()
        self.register_and_login()
        self.call("GET", ME, ME)

    @task(3)
    def profile(self) -> None:
        """``GET /api/v1/users/me``."""
        self.call("GET", ME, ME)

    @task(2)
    def browse(self) -> None:
        """A listing page and a product, signed in."""
        items = self.listing(auth=True, **_filters())
        if items:
            think()
            self.product(random.choice(items)["id"], auth=True)


class Buyer(ApiUser):
    """A customer who orders: product page, order, status until settled, sometimes a cancel."""

    weight = 3
    wait_time = pause(5, 15)
    orders_placed = 0

    def on_start(self) -> None:
        """The catalog's ids and a new account."""
        super().on_start()
        self.register_and_login()

    @task
    def order(self) -> None:
        """One purchase, from an in-stock listing page to the order's final status."""
        query: dict[str, Any] = {"in_stock": "true", "limit": 20}
        sort = random.choice(SORTS)
        if sort:
            query["sort"] = sort
        in_stock = self.listing(auth=True, **query)[:5]
        think()
        if in_stock:
            # One currency per order (the service refuses mixed ones with a 422): a catalog may
            # price products in several, as the full test suite's does.
            currency = in_stock[0].get("currency")
            pick = [item["id"] for item in in_stock if item.get("currency") == currency]
            lines = random.sample(pick, k=min(len(pick), random.choice((1, 1, 1, 2))))
        else:
            lines = CATALOG.products(1)
        for product_id in lines:
            self.product(product_id, auth=True)
        think()
        body = {
            "items": [{"product_id": p, "quantity": random.choice((1, 1, 2))} for p in lines],
            "shipping_address": {"line1": "1 Main St", "city": random.choice(CITIES)},
            # Mostly a card that pays; now and then one the provider declines (order rejected).
            "payment": {"token": "tok_decline" if random.random() < 0.05 else "tok_visa"},
        }
        key = {"Idempotency-Key": str(uuid.uuid4())}  # a new order: a new key
        placed = self.call("POST", ORDERS, ORDERS, body=body, headers=key)
        if placed is None:
            return
        self.orders_placed += 1
        order_id = placed["id"]
        status = placed.get("status", "pending")
        for _ in range(15):  # the page polls until the saga settles
            if status != "pending":
                break
            think(0.5, 1.0)
            current = self.call("GET", f"{ORDERS}/{order_id}", ORDER)
            status = current["status"] if current else status
        if self.orders_placed % 3 == 1:
            think()
            # Expected 409: a rejected order (out of stock, payment declined) cannot be cancelled.
            self.call("POST", f"{ORDERS}/{order_id}/cancel", CANCEL, expected=(409,))
        think()
        self.call("GET", f"{ORDERS}?limit=10", ORDERS)


class Admin(ApiUser):
    """The one admin, restocking sold-out products (or random ones when none is sold out)."""

    fixed_count = 1
    # Without credentials this scenario is left out (locust spawns no abstract class).
    abstract = ADMIN_CREDENTIALS is None
    wait_time = pause(5, 15)

    def on_start(self) -> None:
        """The catalog's ids, and the admin's token pair."""
        assert ADMIN_CREDENTIALS is not None
        super().on_start()
        self.email, self.password = ADMIN_CREDENTIALS
        self.login()

    @task
    def restock(self) -> None:
        """Bring a product's available stock back to a few hundred units."""
        sold_out = [item["id"] for item in self.listing(auth=True, in_stock="false", limit=20)]
        product_id = random.choice(sold_out) if sold_out else CATALOG.products()[0]
        path = f"{PRODUCTS}/{product_id}/inventory"
        think()
        inventory = self.call("GET", path, INVENTORY)
        if inventory is None:
            return
        on_hand = inventory["reserved"] + random.randint(200, 500)
        # Expected 409: an order reserved more units between the read and this write.
        self.call("PUT", path, INVENTORY, body={"on_hand": on_hand}, expected=(409,))
