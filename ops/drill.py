"""``python -m ops.drill`` (``make dr-drill``): the disaster-recovery drill of the orders database.

On an isolated ``aioshop up`` (``perf.suite.system.launch_system``: databases, Redis namespace,
bus exchange, queues and ports of its own, all deleted at the end):

1. place ``--orders`` orders through the gateway and wait until their sagas are done;
2. ``aioshop backup`` into a temporary directory;
3. place ``--lost`` more orders (the ones the restore will lose) and wait for them too;
4. the disaster: ``DROP DATABASE`` of the orders database, under the running system;
5. recovery: stop the system, ``aioshop restore`` the orders database, ``aioshop orders
   rebuild-read-model``, start ``aioshop up`` again and wait until an order answers;
6. check: which orders are back, which are lost, what the API and the idempotency records still
   say about the lost ones, and ``ops.invariants.check_invariants``.

It prints a table: the RTO (from the destroy to the system answering again, split into stop,
restore, rebuild and start), the RPO (the orders placed after the backup, and the seconds between
the orders database's snapshot and the failure) and every invariant violated. The products
database was not restored: the stock that the lost orders reserved is still held there, which
the invariants report (``stock-matches-orders``) and docs/operations.md says how to reconcile.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from core.migrate import drop_database
from ops.invariants import Violation, check_invariants
from perf.bench_orders import customer_token, order_bodies, product_ids
from perf.suite.system import (
    AMQP_URL,
    READY_TIMEOUT,
    System,
    launch_system,
    stop_process,
    wait_http,
)

__all__ = ["DrillResult", "main", "render", "run_drill"]

FINAL = ("confirmed", "rejected")
SAGA_TIMEOUT = 120.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
VIEW_TTL = 60.0  # services.orders.service.VIEW_TTL: how long an order's view stays cached


@dataclass
class DrillResult:
    """What one drill measured (seconds unless said otherwise)."""

    placed_before_backup: int
    placed_after_backup: int
    backup_seconds: float
    snapshot_to_failure_seconds: float  # the RPO in time: orders database snapshot -> failure
    answer_after_destroy: str  # what GET /orders/{id} answered right after the DROP
    detect_seconds: float  # the DROP and that GET: the drill's stand-in for noticing
    stop_seconds: float
    restore_seconds: float
    rebuild_seconds: float
    start_seconds: float
    rto_seconds: float  # destroy -> an order answers through the gateway again
    kept: int  # orders of before the backup, back with their status
    lost: int  # orders of after the backup that the API no longer knows (the RPO in orders)
    stale_views: int  # lost orders still shown from the cache when the system was back
    stale_views_gone_after: float | None  # seconds after the restart until none is shown
    idempotent_replays: int  # lost orders whose Idempotency-Key still replays their 202
    orphan_reservations: int  # reservations in products for orders the orders DB lacks
    orphan_units: int  # units of stock they hold
    violations: list[Violation] = field(default_factory=list)

    @property
    def rpo_orders(self) -> int:
        """The orders the restore lost: those placed after the backup."""
        return self.lost


@dataclass(frozen=True, slots=True)
class _Placed:
    order_id: str
    key: str
    body: dict[str, Any]


class _Api:
    """Orders through the gateway, as one customer."""

    def __init__(self, session: aiohttp.ClientSession, gateway: str, token: str) -> None:
        self.session = session
        self.url = f"{gateway}/api/v1/orders"
        self.auth = {"Authorization": f"Bearer {token}"}

    async def place(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        headers = {**self.auth, "Idempotency-Key": key}
        async with self.session.post(self.url, json=body, headers=headers) as response:
            payload: dict[str, Any] = await response.json(content_type=None)
            return response.status, payload

    async def status(self, order_id: str) -> tuple[int, str | None]:
        try:
            async with self.session.get(f"{self.url}/{order_id}", headers=self.auth) as response:
                if response.status != 200:
                    return response.status, None
                payload = await response.json(content_type=None)
                return 200, str(payload["status"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, exc.__class__.__name__


async def _place(api: _Api, bodies: list[dict[str, Any]]) -> list[_Placed]:
    placed = []
    for body in bodies:
        key = f"drill-{uuid.uuid4()}"
        status, payload = await api.place(body, key)
        if status != 202:
            raise RuntimeError(f"placing an order answered {status}: {payload}")
        placed.append(_Placed(str(payload["id"]), key, body))
    deadline = time.monotonic() + SAGA_TIMEOUT
    pending = {p.order_id for p in placed}
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} saga(s) not done in {SAGA_TIMEOUT:.0f} s")
        for order_id in sorted(pending):
            _, state = await api.status(order_id)
            if state in FINAL:
                pending.discard(order_id)
        if pending:
            await asyncio.sleep(0.2)
    return placed


def _aioshop(system: System, *args: str) -> float:
    """Run ``aioshop ARGS`` in the system's environment; its duration (``RuntimeError`` with its
    output if it fails)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"aioshop {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    print(f"$ aioshop {' '.join(args)}\n{done.stdout.rstrip()}", file=sys.stderr)
    return time.monotonic() - started


def _restart(system: System) -> None:
    """``aioshop up`` again with the system's environment, in place of the stopped one (so that
    ``launch_system`` stops this one at the end)."""
    with system.log.open("ab") as output:
        system.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            env=system.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"{system.url('gateway')}/readyz", timeout=READY_TIMEOUT, alive=system.process)


async def _wait_answering(api: _Api, order_id: str) -> None:
    """Until GET of ``order_id`` answers 200 (the gateway is ready already: seconds at most)."""
    async with asyncio.timeout(60.0):
        while True:
            if (await api.status(order_id))[0] == 200:
                return
            await asyncio.sleep(0.1)


async def _missing(orders_dsn: str, placed: list[_Placed]) -> int:
    """How many of ``placed`` the orders database has no event of."""
    conn = await asyncpg.connect(orders_dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(DISTINCT order_id) FROM order_events WHERE order_id = ANY($1::uuid[])",
            [uuid.UUID(p.order_id) for p in placed],
        )
        return len(placed) - int(found)
    finally:
        await conn.close()


async def _orphans(orders_dsn: str, products_dsn: str) -> tuple[int, int]:
    """Reservations still holding stock for orders the orders database does not know."""
    orders = await asyncpg.connect(orders_dsn)
    try:
        known = [r["id"] for r in await orders.fetch("SELECT id FROM order_views")]
    finally:
        await orders.close()
    products = await asyncpg.connect(products_dsn)
    try:
        row = await products.fetchrow(
            """
            SELECT count(DISTINCT r.order_id) AS orders, coalesce(sum(l.quantity), 0) AS units
              FROM reservations r JOIN reservation_lines l USING (order_id)
             WHERE r.status IN ('reserved', 'committed') AND r.order_id <> ALL($1::uuid[])
            """,
            known,
        )
        assert row is not None
        return int(row["orders"]), int(row["units"])
    finally:
        await products.close()


async def _after_restart(
    api: _Api, kept: list[_Placed], lost: list[_Placed], stale_wait: float
) -> tuple[int, int, float | None, int]:
    """(kept, stale views, seconds until none, idempotent replays), as the API tells."""
    back = 0
    for p in kept:
        back += (await api.status(p.order_id))[1] in FINAL
    answers = [await api.status(p.order_id) for p in lost]
    stale = sum(1 for status, _ in answers if status == 200)
    replays = 0
    for p in lost:
        status, payload = await api.place(p.body, p.key)
        replays += status == 202 and str(payload.get("id")) == p.order_id
    started, gone_after = time.monotonic(), None
    if stale == 0:
        gone_after = 0.0
    elif stale_wait > 0:
        while time.monotonic() - started < stale_wait:
            codes = [(await api.status(p.order_id))[0] for p in lost]
            if all(code == 404 for code in codes):
                gone_after = time.monotonic() - started
                break
            await asyncio.sleep(1.0)
    return back, stale, gone_after, replays


async def _drill(
    system: System, backup_dir: Path, orders: int, lost: int, stale_wait: float
) -> DrillResult:
    products = await product_ids(system.databases["products"])
    bodies = order_bodies(products, orders + lost, seed=15)
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        api = _Api(session, system.url("gateway"), customer_token())
        before = await _place(api, bodies[:orders])
        backup_seconds = await asyncio.to_thread(
            _aioshop, system, "backup", "--dir", str(backup_dir)
        )
        manifest = json.loads((backup_dir / "manifest.json").read_text())
        snapshot = next(d for d in manifest["dumps"] if d["service"] == "orders")["started_at"]
        after = await _place(api, bodies[orders:])

        failed_at_wall = time.time()
        failed_at = time.monotonic()
        await drop_database(system.databases["orders"])
        code, detail = await api.status(before[0].order_id)
        answer = f"HTTP {code}" if code else f"no answer ({detail})"

        t0 = time.monotonic()
        await asyncio.to_thread(stop_process, system.process)
        t1 = time.monotonic()
        await asyncio.to_thread(_aioshop, system, "restore", str(backup_dir), "orders")
        t2 = time.monotonic()
        await asyncio.to_thread(_aioshop, system, "orders", "rebuild-read-model")
        t3 = time.monotonic()
        await asyncio.to_thread(_restart, system)
        await _wait_answering(api, before[0].order_id)
        up = time.monotonic()

        kept, stale, gone_after, replays = await _after_restart(api, before, after, stale_wait)
    gone = await _missing(system.databases["orders"], after)
    orphan_orders, orphan_units = await _orphans(
        system.databases["orders"], system.databases["products"]
    )
    violations = await check_invariants(
        system.databases["orders"],
        system.databases["products"],
        deadline=15.0,
        amqp_url=AMQP_URL,
        parking_queues=[system.env["ORDERS_BUS_QUEUE"], system.env["PRODUCTS_BUS_QUEUE"]],
    )
    snapshot_at = datetime.fromisoformat(snapshot).timestamp()
    return DrillResult(
        placed_before_backup=len(before),
        placed_after_backup=len(after),
        backup_seconds=backup_seconds,
        snapshot_to_failure_seconds=failed_at_wall - snapshot_at,
        answer_after_destroy=answer,
        detect_seconds=t0 - failed_at,
        stop_seconds=t1 - t0,
        restore_seconds=t2 - t1,
        rebuild_seconds=t3 - t2,
        start_seconds=up - t3,
        rto_seconds=up - failed_at,
        kept=kept,
        lost=gone,
        stale_views=stale,
        stale_views_gone_after=gone_after,
        idempotent_replays=replays,
        orphan_reservations=orphan_orders,
        orphan_units=orphan_units,
        violations=violations,
    )


def run_drill(
    *, orders: int, lost: int, products: int = 50, reports: Path, stale_wait: float = 0.0
) -> DrillResult:
    """Launch an isolated system, run the drill on it (see the module), tear it down."""
    with (
        tempfile.TemporaryDirectory(prefix="aioshop-drill-") as scratch,
        launch_system(products=products, reports=reports) as system,
    ):
        return asyncio.run(_drill(system, Path(scratch) / "backup", orders, lost, stale_wait))


def render(result: DrillResult) -> str:
    """The drill's table (Markdown)."""
    stale = (
        f"{result.stale_views} of {result.placed_after_backup}"
        + (
            f", all gone {result.stale_views_gone_after:.0f} s after the restart"
            if result.stale_views_gone_after
            else ""
        )
        if result.stale_views
        else "none"
    )
    rows = [
        ("RTO: destroy -> an order answers again", f"{result.rto_seconds:.1f} s"),
        ("  DROP, then a GET fails (detection)", f"{result.detect_seconds:.1f} s"),
        ("  stop the system", f"{result.stop_seconds:.1f} s"),
        ("  aioshop restore (orders)", f"{result.restore_seconds:.1f} s"),
        ("  aioshop orders rebuild-read-model", f"{result.rebuild_seconds:.1f} s"),
        ("  aioshop up until an order answers", f"{result.start_seconds:.1f} s"),
        (
            "RPO: orders lost (placed after the backup)",
            f"{result.lost} of {result.placed_after_backup}",
        ),
        ("RPO: orders DB snapshot -> failure", f"{result.snapshot_to_failure_seconds:.1f} s"),
        (
            "orders kept (placed before the backup)",
            f"{result.kept} of {result.placed_before_backup}",
        ),
        ("aioshop backup (3 databases + broker)", f"{result.backup_seconds:.1f} s"),
        ("GET an order right after the destroy", result.answer_after_destroy),
        ("lost orders still shown from the cache", stale),
        ("lost orders whose Idempotency-Key replays", str(result.idempotent_replays)),
        (
            "stock still held for lost orders",
            f"{result.orphan_reservations} reservation(s), {result.orphan_units} unit(s)",
        ),
        ("invariant violations", str(len(result.violations))),
    ]
    rows += [(f"  {v.invariant}", v.detail.partition(":")[0]) for v in result.violations]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'disaster-recovery drill: orders database':<{width}} | measured |"]
    lines.append(f"|{'-' * (width + 2)}|----------|")
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    lines += ["", *(f"{v.invariant}: {v.detail}" for v in result.violations)]
    return "\n".join(lines).rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the drill, print its table; exit 1 if it did not lose exactly the orders placed after
    the backup or did not bring back every order placed before it."""
    parser = argparse.ArgumentParser(prog="python -m ops.drill", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20, help="placed before the backup (20)")
    parser.add_argument("--lost", type=int, default=5, help="placed after the backup (5)")
    parser.add_argument("--products", type=int, default=50, help="catalog size (50)")
    parser.add_argument(
        "--stale-wait",
        type=float,
        default=VIEW_TTL + 15,
        help="seconds to wait for cached views of lost orders to expire (75; 0: do not wait)",
    )
    parser.add_argument("--reports", type=Path, default=Path("perf/reports"))
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.lost < 0:
        parser.error("--orders >= 1 and --lost >= 0")
    result = run_drill(
        orders=args.orders,
        lost=args.lost,
        products=args.products,
        reports=args.reports,
        stale_wait=args.stale_wait,
    )
    table = render(result)
    print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    expected = result.lost == result.placed_after_backup and result.kept == (
        result.placed_before_backup
    )
    return 0 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
