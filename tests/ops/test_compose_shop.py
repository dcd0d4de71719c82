"""The bookkeeping of the system test in containers (``ops.compose_shop``): what the clients
were told against what the orders database holds."""

from __future__ import annotations

import pytest

from ops.compose_shop import Ledger, figures_table

pytestmark = pytest.mark.unit


def _ledger(**orders: str) -> Ledger:
    ledger = Ledger()
    for key, order_id in orders.items():
        ledger.accept(key, order_id)
    return ledger


def test_every_accepted_order_stored_and_final_is_a_clean_account() -> None:
    accounting = _ledger(k1="o1", k2="o2").account({"o1": "confirmed", "o2": "rejected"})
    assert (accounting.placed, accounting.final) == (2, 2)
    assert accounting.ok


def test_an_accepted_order_missing_from_the_database_is_lost() -> None:
    accounting = _ledger(k1="o1", k2="o2").account({"o1": "confirmed"})
    assert accounting.lost == ["o2"]
    assert not accounting.ok


def test_an_order_no_key_got_is_a_duplicate() -> None:
    accounting = _ledger(k1="o1").account({"o1": "confirmed", "o9": "confirmed"})
    assert accounting.duplicated == ["o9"]
    assert not accounting.ok


def test_a_key_answered_with_two_orders_is_a_duplicate() -> None:
    ledger = _ledger(k1="o1")
    ledger.accept("k1", "o1")  # the same answer again: a retry, fine
    assert ledger.conflicts == []
    ledger.accept("k1", "o2")
    assert ledger.conflicts == ["k1"]
    assert not ledger.account({"o1": "confirmed"}).ok


def test_a_pending_order_is_not_final() -> None:
    accounting = _ledger(k1="o1", k2="o2").account({"o1": "pending", "o2": "shipped"})
    assert accounting.pending == ["o1"]
    assert accounting.final == 1
    assert not accounting.ok


def test_the_figures_table_is_markdown() -> None:
    table = figures_table([("image aioshop:latest", "120 MB"), ("ready", "40 s")])
    assert table.splitlines() == [
        "| what | figure |",
        "| --- | --- |",
        "| image aioshop:latest | 120 MB |",
        "| ready | 40 s |",
    ]
