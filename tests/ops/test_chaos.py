"""``python -m ops.chaos --profile short`` end to end (what ``make chaos`` runs in CI), and the
pure parts of the suite: the fault selection, the windows of the request log, the table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ops.chaos.faults import FAULTS
from ops.chaos.load import TIMES as X
from ops.chaos.load import Load, Window
from ops.chaos.run import select
from ops.chaos.table import Row, markdown
from ops.invariants import Violation

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_faults_are_selected_in_their_order() -> None:
    assert [f.key for f in select([], [])] == [f.key for f in FAULTS]
    assert [f.key for f in select(["redis", "rabbitmq"], [])] == ["rabbitmq", "redis"]
    assert "memcached" not in [f.key for f in select([], ["memcached"])]
    with pytest.raises(ValueError, match="unknown fault"):
        select(["disk-full"], [])


@pytest.mark.unit
def test_a_window_counts_the_requests_that_started_in_it(tmp_path: Path) -> None:
    load = Load("http://127.0.0.1:1", users=1, workdir=tmp_path, env={}, think=1)
    load.log.write_text(
        "100.000 200 ok /api/v1/products\n"
        "101.500 503 fail /api/v1/products\tHTTP 503: The catalog is unavailable\n"
        "101.600 0 fail /api/v1/orders\n"
        "102.000 409 ok /api/v1/orders/{id}/cancel\n"
        "103.000 503 fail /api/v1/products\n"
        "104.0"  # a line being written
    )
    window = load.window(101, 103)
    assert window.requests == 3
    assert window.failures == Counter({503: 1, 0: 1})
    assert window.reasons == Counter(
        {
            (503, "/api/v1/products", "HTTP 503: The catalog is unavailable"): 1,
            (0, "/api/v1/orders", ""): 1,
        }
    )
    assert window.errors() == f"conn{X}1, 503{X}1"  # a tie: by status
    assert load.window(0, 200).errors() == f"503{X}2, conn{X}1"
    assert Window().errors() == "none"


@pytest.mark.unit
def test_the_table_names_violations_and_unrecovered_faults() -> None:
    rows = [
        Row("Redis stopped", 3.0, Window(10, Counter({503: 2})), 0.4),
        Row("memcached stopped", 3.0, Window(5), None, note="no order confirmed"),
        Row("PostgreSQL", 5.0, Window(), 1.0, [Violation("outbox-drained", "1: x")]),
    ]
    text = markdown(rows)
    assert f"| Redis stopped | 3.0 | 10 | 503{X}2 | 0.4 | 0 |" in text
    assert "| not recovered |" in text
    assert "| 1: outbox-drained |" in text
    assert "- PostgreSQL: outbox-drained: 1: x" in text
    assert [row.failed for row in rows] == [False, True, True]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_short_profile_runs_every_fault_without_a_violation(tmp_path: Path) -> None:
    """The whole suite, short: a row per fault, each recovered, no invariant violated."""
    done = subprocess.run(  # noqa: S603  # our own command line
        [sys.executable, "-m", "ops.chaos", "--profile", "short", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    (report,) = tmp_path.glob("chaos-*.json")
    rows = json.loads(report.read_text())["rows"]
    names = [row["fault"] for row in rows]
    assert names == [
        "baseline (no fault)",
        *(fault.label for fault in FAULTS),
        "whole run (checked once the load stopped)",
    ]
    for row in rows:
        assert row["violations"] == [], row
        assert row["recovery_s"] is not None, row
        assert row["requests"] > 0, row
    assert "checked" in rows[-1]["note"]
    assert "| invariant violations |" in done.stdout
