"""perf.suite, the benchmark table: its load drivers against a real server, its table, and one
short run of ``python -m perf.suite`` against a launched system."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from perf.suite.__main__ import memory_rows
from perf.suite.http import probe
from perf.suite.load import MARK, LoadResult, Request, _lua, _parse, run_load
from perf.suite.table import Row, render

ROOT = Path(__file__).resolve().parents[2]
TOOLS = [
    "python",
    pytest.param(
        "wrk",
        marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    ),
]


@pytest.mark.unit
def test_the_wrk_script_sends_the_request_and_prints_one_line_of_figures() -> None:
    script = _lua(
        Request("http://h/x", method="POST", headers={"X-A": "b"}, bodies=('{"a": 1}',)), 12.5
    )
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["X-A"] = "b"' in script
    assert '"{\\"a\\": 1}"' in script
    assert "function delay() return 12.500 end" in script
    assert MARK in script


@pytest.mark.unit
def test_figures_are_read_from_the_marked_line_and_a_run_without_one_is_an_error() -> None:
    out = f"noise\n{MARK}" + '{"requests": 500, "us": 2000000, "p50_us": 1500, "p99_us": 9000,'
    result = _parse(out + ' "errors": 3}\n', "wrk")
    assert result == LoadResult(500, 2.0, 1.5, 9.0, 3, "wrk")
    assert result.rps == 250
    with pytest.raises(RuntimeError, match="printed no figures"):
        _parse("unable to connect", "wrk")


@pytest.mark.unit
def test_the_table_shows_ratio_targets_and_verdicts() -> None:
    rows = [
        Row(
            "reads",
            "fast",
            6000,
            p50_ms=1.234,
            p99_ms=5,
            ratio=0.61,
            baseline="ceiling",
            target=">= 0.6x",
            met=True,
        ),
        Row("reads", "slow", 900.5, ratio=0.05, baseline="ceiling", target=">= 0.35x", met=False),
        *memory_rows({"products": 80.0, "users": 95.0}, {}),
    ]
    table = render(rows).splitlines()
    assert table[2].startswith("| reads | fast | 6,000 req/s | 1.23 | 5.00 | 0.61x ceiling |")
    assert ">= 0.6x: met" in table[2]
    assert ">= 0.35x: **not met**" in table[3]
    assert "| 95.0 MB (largest instance) |" in table[4]
    assert "<= 90 MB: **not met**" in table[4]
    assert "products 80, users 95" in table[4]
    assert table[5].count("| - |") == 2  # nothing sampled under load: no figure, no verdict
    assert "<= 150 MB: not measured" in table[5]


def _counting_app(seen: Counter[str]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        seen[f"{request.method} {request.path} {await request.text()}"] += 1
        if request.path == "/missing":
            return web.json_response({"title": "Not Found"}, status=404)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_run_loads_the_server_with_every_variant_and_counts_what_it_saw(tool: str) -> None:
    seen: Counter[str] = Counter()
    async with TestServer(_counting_app(seen), host="127.0.0.1") as server:
        request = Request(
            str(server.make_url("/")),
            method="POST",
            headers={"Content-Type": "application/json"},
            paths=("/a", "/b"),
            bodies=("1", "2"),
        )
        result = await asyncio.to_thread(run_load, request, seconds=1, connections=4, tool=tool)
        missing = await asyncio.to_thread(
            run_load, Request(str(server.make_url("/missing"))), seconds=1, connections=2, tool=tool
        )
    assert result.tool == tool
    assert result.errors == 0
    assert result.requests > 20
    assert set(seen) - {"GET /missing "} == {f"POST /{p} {b}" for p in "ab" for b in "12"}
    assert sum(n for key, n in seen.items() if key.startswith("POST")) >= result.requests
    assert 0 < result.p50_ms <= result.p99_ms
    assert missing.errors == missing.requests > 0  # a 404 is a failed request, not throughput


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_paced_run_stays_near_its_rate(tool: str) -> None:
    seen: Counter[str] = Counter()
    async with TestServer(_counting_app(seen), host="127.0.0.1") as server:
        result = await asyncio.to_thread(
            run_load,
            Request(str(server.make_url("/"))),
            seconds=2,
            connections=4,
            rate=100,
            tool=tool,
        )
    # The delay does not count the request's own latency: a little under the rate, never over.
    assert 100 <= result.requests <= 210


async def test_a_probe_that_fails_says_what_the_server_answered() -> None:
    async with TestServer(_counting_app(Counter()), host="127.0.0.1") as server:
        await asyncio.to_thread(probe, Request(str(server.make_url("/fine"))))
        with pytest.raises(RuntimeError, match=r"404.*Not Found"):
            await asyncio.to_thread(probe, Request(str(server.make_url("/missing"))))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_make_bench_prints_one_table_of_every_row_against_a_launched_system(
    tmp_path: Path,
) -> None:
    done = subprocess.run(  # noqa: S603 (this interpreter, fixed arguments)
        [
            sys.executable,
            "-m",
            "perf.suite",
            "--seconds",
            "1",
            "--products",
            "40",
            "--warm-window",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
        # The suite's own launched system still holds its connections when this runs last:
        # smaller pools keep both within PostgreSQL's 100 (the shipped 20 is what make bench uses).
        env={**os.environ, "PYTHONPATH": str(ROOT), "DB_POOL_MAX_SIZE": "8"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert report["machine"]["cores"] >= 1
    assert "bare aiohttp handler, uvloop (the ceiling)" in rows
    http = [row for row in report["rows"] if row["unit"] == "req/s"]
    assert len(http) >= 9
    for row in http:
        assert row["throughput"] > 0, row
        # A row counts its failures in its note; on a shared CI machine a stray timeout may
        # happen, a failing route may not.
        failed = re.search(r"(\d+) errors of (\d+)", row["note"])
        assert failed is None or int(failed[1]) <= int(failed[2]) / 100, row
    assert "| product by id, cached: through the gateway |" in done.stdout
    groups = {row["group"] for row in report["rows"]}
    assert groups == {"peers", "reads", "accounts", "orders", "memory", "warming", "bus", "cache"}
    for row in report["rows"]:
        if row["group"] in {"orders", "warming", "bus", "cache", "memory"}:
            assert (row["throughput"] or 0) > 0, row
    sagas = [row for row in report["rows"] if row["group"] == "orders"]
    assert all(" 0 confirmed" not in row["note"] for row in sagas), sagas
    assert (tmp_path / "bench.md").read_text().strip() == done.stdout.strip()
