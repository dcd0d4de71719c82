"""The chaos run's load: the scenarios of ``perf/locustfile.py``, more orders, a shipper, and
every request logged.

Locust runs this file (``ops.chaos.load`` starts it headless in a process of its own). The
visitors are those of the performance work, with two changes so that the invariants have orders
in every state to check: ``Buyer`` weighs 8 instead of 3, and a ``Shipper`` (the admin account,
exactly one) ships a confirmed order every few seconds (``order.shipped``: the products service
commits its stock).

Every request, as it ends, appends one line to the file ``CHAOS_REQUEST_LOG`` names::

    <unix time the request started> <status: 0 when no answer came> <ok|fail> <request name>

and, after a failure's name, a tab and what the answer said (its problem's title and detail).

from which the run counts the requests and failures of each fault's window. A request counts as
failed as the scenarios judge it (an expected 409 is a success, a 5xx or a reset a failure).
"""

from __future__ import annotations

import os
import random
from typing import Any, TextIO

from locust import events, task

from perf import locustfile as scenarios

__all__ = ["Admin", "Browser", "Buyer", "Member", "Searcher", "Shipper"]

ORDERS = scenarios.ORDERS
SHIP = "/api/v1/orders/{id}/ship"


class Browser(scenarios.Browser):
    """As in ``perf/locustfile.py``."""


class Searcher(scenarios.Searcher):
    """As in ``perf/locustfile.py``."""


class Member(scenarios.Member):
    """As in ``perf/locustfile.py``."""


class Buyer(scenarios.Buyer):
    """As in ``perf/locustfile.py``, more of them."""

    weight = 8


class Admin(scenarios.Admin):
    """As in ``perf/locustfile.py`` (the restocking admin)."""

    abstract = scenarios.ADMIN_CREDENTIALS is None


class Shipper(scenarios.ApiUser):
    """The admin account shipping confirmed orders (it sees everyone's: ``orders:read_all``)."""

    fixed_count = 1
    abstract = scenarios.ADMIN_CREDENTIALS is None
    wait_time = scenarios.pause(2, 5)

    def on_start(self) -> None:
        """The catalog's ids, and the admin's token pair."""
        assert scenarios.ADMIN_CREDENTIALS is not None
        super().on_start()
        self.email, self.password = scenarios.ADMIN_CREDENTIALS
        self.login()

    @task
    def ship(self) -> None:
        """Ship one of the newest confirmed orders."""
        page = self.call("GET", f"{ORDERS}?limit=50", ORDERS)
        confirmed = [o["id"] for o in (page or {}).get("items", []) if o["status"] == "confirmed"]
        if confirmed:
            order_id = random.choice(confirmed)
            # Expected 409: its buyer cancelled it meanwhile, or it was shipped already.
            self.call("POST", f"{ORDERS}/{order_id}/ship", SHIP, expected=(409,))


_log: TextIO | None = None


def _open(**_: Any) -> None:
    global _log
    path = os.environ.get("CHAOS_REQUEST_LOG")
    if path:
        _log = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  # open for the whole run


def _record(
    name: str, response: Any, exception: BaseException | None, start_time: float, **_: Any
) -> None:
    if _log is None:
        return
    status = getattr(response, "status_code", 0) or 0
    if exception is None:
        _log.write(f"{start_time:.3f} {status} ok {name}\n")
        return
    detail = " ".join(str(exception).split())[:200]  # one line: the problem's title and detail
    _log.write(f"{start_time:.3f} {status} fail {name}\t{detail}\n")


def _close(**_: Any) -> None:
    if _log is not None:
        _log.close()


# Locust's event hooks are untyped.
events.init.add_listener(_open)  # type: ignore[no-untyped-call]
events.request.add_listener(_record)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_close)  # type: ignore[no-untyped-call]
