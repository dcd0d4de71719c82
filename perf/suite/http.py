"""The HTTP rows: the peers, then the system's reads and its authenticated calls, under wrk.

Every row is a closed loop of ``connections`` for ``seconds`` after a discarded one-second
warm-up, from a separate process; its ratio is to the bare aiohttp ceiling measured first in
the same run. The gateway's own cost is measured at half its saturation rate (paced), where a
hop's added latency is what a user feels, rather than at saturation, where it is queueing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit, urlunsplit
from urllib.request import Request as UrlRequest
from urllib.request import urlopen

from perf.suite.load import LoadResult, Request, run_load
from perf.suite.system import System, extra_products, free_port, stop_process, wait_http
from perf.suite.table import Row

__all__ = ["HttpBench", "RssSampler", "json_call"]

CEILING = "bare aiohttp"
LOGIN_ACCOUNTS = 48
LOGIN_CONNECTIONS = 4
LOG_ROUNDS = 2
LOG_TARGET = 0.9


def json_call(
    url: str, *, method: str = "GET", body: object = None, token: str = ""
) -> dict[str, object]:
    """One JSON call on 127.0.0.1 (set-up of the rows: ids, accounts, tokens)."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = UrlRequest(url, data=data, headers=headers, method=method)  # noqa: S310 (loopback)
    with urlopen(request, timeout=30) as response:  # noqa: S310  # nosec B310
        answer: dict[str, object] = json.loads(response.read() or b"{}")
        return answer


def probe(request: Request) -> None:
    """Send ``request`` once; raise with the answer unless it is a success (a row that only
    measures errors measures nothing)."""
    url = request.url
    if request.paths:
        url = urlunsplit(urlsplit(url)._replace(path="", query="")) + request.paths[0]
    body = request.bodies[0] if request.bodies else request.body
    prepared = UrlRequest(  # noqa: S310 (http://127.0.0.1 only)
        url, data=body.encode() or None, headers=request.headers, method=request.method
    )
    try:
        with urlopen(prepared, timeout=30):  # noqa: S310  # nosec B310
            return
    except HTTPError as exc:
        raise RuntimeError(f"{request.method} {url}: {exc.code} {exc.read()[:500]!r}") from exc


@contextmanager
def peer(name: str) -> Iterator[str]:
    """Run the peer ``name`` (``perf.suite.peers``) on a free port; yield its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "perf.suite.peers", name, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, timeout=30, alive=process)
        yield url
    finally:
        stop_process(process, timeout=10)


class RssSampler:
    """The largest resident memory of each role while it runs (a thread polling every 0.5 s)."""

    def __init__(self, system: System) -> None:
        self._system = system
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for role, mb in self._system.rss_mb().items():
                self.peak[role] = max(self.peak.get(role, 0.0), mb)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class HttpBench:
    """The HTTP rows of one run against ``system``."""

    system: System
    seconds: float
    connections: int
    tool: str
    rows: list[Row] = field(default_factory=list)
    ceiling: float = 0.0

    def measure(
        self,
        request: Request,
        *,
        rate: float | None = None,
        connections: int | None = None,
        seconds: float | None = None,
    ) -> LoadResult:
        """One probe that must succeed, a discarded one-second warm-up, then the measured run."""
        probe(request)
        connections = connections or self.connections
        run_load(request, seconds=1, connections=connections, rate=rate, tool=self.tool)
        return run_load(
            request,
            seconds=seconds or self.seconds,
            connections=connections,
            rate=rate,
            tool=self.tool,
        )

    def add(
        self,
        group: str,
        name: str,
        result: LoadResult,
        *,
        target: str = "",
        met: Callable[[LoadResult, float], bool] | None = None,
        note: str = "",
    ) -> Row:
        """A row of ``result`` with its ratio to the ceiling (and the verdict of ``met``)."""
        ratio = result.rps / self.ceiling if self.ceiling else None
        notes = [note] if note else []
        if result.errors:
            notes.append(f"{result.errors} errors of {result.requests}")
        row = Row(
            group=group,
            name=name,
            throughput=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            ratio=ratio,
            baseline=CEILING,
            target=target,
            met=met(result, ratio or 0.0) if met else None,
            note="; ".join(notes),
        )
        self.rows.append(row)
        return row

    def peers(self) -> None:
        """The ceiling (bare aiohttp on uvloop) and FastAPI on uvicorn, same JSON body."""
        with peer("aiohttp") as url:
            ceiling = self.measure(Request(url))
        self.ceiling = ceiling.rps
        self.add(
            "peers", "bare aiohttp handler, uvloop (the ceiling)", ceiling, note="no middleware"
        )
        with peer("fastapi") as url:
            self.add(
                "peers",
                "bare FastAPI app, uvicorn + uvloop + httptools",
                self.measure(Request(url)),
                note="no middleware, no access log",
            )

    def reads(self) -> None:
        """Cached product by id (service and gateway), listing with filters, search."""
        gateway, products = self.system.url("gateway"), self.system.url("products")
        listing = json_call(f"{gateway}/api/v1/products?limit=5&in_stock=true")
        items = listing["items"]
        if not isinstance(items, list) or not items:
            raise RuntimeError("the seeded catalog has no product in stock")
        product = items[0]["id"]
        category = items[0]["category_id"]
        by_id = f"/api/v1/products/{product}"
        service = self.measure(Request(products + by_id))
        self.add(
            "reads",
            "product by id, cached: service",
            service,
            target=">= 0.6x",
            met=lambda _, ratio: ratio >= 0.6,
        )
        through = self.measure(Request(gateway + by_id))
        self.add(
            "reads",
            "product by id, cached: through the gateway",
            through,
            target=">= 0.35x",
            met=lambda _, ratio: ratio >= 0.35,
        )
        self._gateway_hop(products + by_id, gateway + by_id, saturation=through.rps)
        self._logging_cost(by_id)
        filters = urlencode(
            {
                "category": category,
                "min_price": 500,
                "max_price": 50000,
                "in_stock": "true",
                "sort": "price",
                "limit": 20,
            }
        )
        self.add(
            "reads",
            "listing with filters (category, price, in stock, sorted): gateway",
            self.measure(Request(f"{gateway}/api/v1/products?{filters}")),
        )
        search = "/api/v1/products?" + urlencode({"q": "lamp", "limit": 20})
        self.add(
            "reads",
            "search `q=lamp`: service",
            self.measure(Request(products + search)),
            target=">= 0.25x",
            met=lambda _, ratio: ratio >= 0.25,
        )
        self.add("reads", "search `q=lamp`: gateway", self.measure(Request(gateway + search)))

    def _logging_cost(self, path: str) -> None:
        """The same cached read on two more products instances, one at the shipped INFO level
        and one at WARNING (no access log), in alternate runs: what the default log costs."""
        runs: dict[str, list[LoadResult]] = {"INFO": [], "WARNING": []}
        with (
            extra_products(self.system, "products-info", {"LOG_LEVEL": "INFO"}) as (info, _),
            extra_products(self.system, "products-quiet", {"LOG_LEVEL": "WARNING"}) as (quiet, _),
        ):
            for _ in range(LOG_ROUNDS):
                runs["INFO"].append(self.measure(Request(info + path)))
                runs["WARNING"].append(self.measure(Request(quiet + path)))
        info_rps = statistics.median(r.rps for r in runs["INFO"])
        quiet_rps = statistics.median(r.rps for r in runs["WARNING"])
        ratio = info_rps / quiet_rps
        self.rows.append(
            Row(
                group="reads",
                name="product by id, cached: service at INFO (the default) over WARNING",
                throughput=info_rps,
                ratio=ratio,
                baseline="LOG_LEVEL=WARNING",
                target="the log costs <= 10 %",
                met=ratio >= LOG_TARGET,
                note=f"WARNING: {quiet_rps:,.0f} req/s; medians of {LOG_ROUNDS} alternate runs",
            )
        )

    def _gateway_hop(self, service_url: str, gateway_url: str, *, saturation: float) -> None:
        rate = saturation / 2
        direct = self.measure(Request(service_url), rate=rate)
        through = self.measure(Request(gateway_url), rate=rate)
        added_p50 = through.p50_ms - direct.p50_ms
        added_p99 = through.p99_ms - direct.p99_ms
        self.rows.append(
            Row(
                group="reads",
                name=f"gateway hop at half its saturation ({rate:,.0f} req/s asked)",
                throughput=through.rps,
                p50_ms=added_p50,
                p99_ms=added_p99,
                target="adds <= 1 ms p50, <= 3 ms p99",
                met=added_p50 <= 1 and added_p99 <= 3,
                note=(
                    f"p50/p99 are what the hop adds: gateway {through.p50_ms:.2f}/"
                    f"{through.p99_ms:.2f} ms, service {direct.p50_ms:.2f}/{direct.p99_ms:.2f} ms"
                ),
            )
        )

    def accounts(self) -> None:
        """Login (bcrypt at the shipped cost) and ``users/me`` (JWT + revocation check).

        Logins rotate over ``LOGIN_ACCOUNTS`` accounts, as real traffic does: the users service
        throttles attempts on one account, and one account hammered by 32 connections is the
        guesser it slows down."""
        gateway = self.system.url("gateway")
        accounts = [
            {"email": f"bench-{uuid.uuid4().hex[:12]}@example.com", "password": uuid.uuid4().hex}
            for _ in range(LOGIN_ACCOUNTS)
        ]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda account: json_call(
                        f"{gateway}/api/v1/auth/register",
                        method="POST",
                        body={**account, "full_name": "Bench User"},
                    ),
                    accounts,
                )
            )
        tokens = json_call(f"{gateway}/api/v1/auth/login", method="POST", body=accounts[0])
        me = Request(
            f"{gateway}/api/v1/users/me",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        self.add(
            "accounts",
            "users/me: gateway",
            self.measure(me),
            target="p99 <= 4x p50",
            met=lambda result, _: result.p99_ms <= 4 * result.p50_ms,
        )
        # Last: a login costs a bcrypt hash of CPU, so a closed loop of 32 only queues hashes
        # (and leaves a backlog behind it). A few connections keep the CPU busy all the same.
        login = Request(
            f"{gateway}/api/v1/auth/login",
            method="POST",
            headers={"Content-Type": "application/json"},
            bodies=tuple(json.dumps(account) for account in accounts),
        )
        connections = min(LOGIN_CONNECTIONS, self.connections)
        self.add(
            "accounts",
            f"login: gateway ({LOGIN_ACCOUNTS} accounts, {connections} connections)",
            # At least 5 s: one hash takes a good part of a second on a busy small machine.
            self.measure(login, connections=connections, seconds=max(self.seconds, 5.0)),
            note="bcrypt at the shipped cost, off the event loop; at least 5 s",
        )
