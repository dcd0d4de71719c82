"""``python -m perf.suite`` (``make bench``): the whole system and its peers, one table, one run.

Starts ``aioshop up`` with its shipped defaults (isolated: see ``perf.suite.system``) and the
peers, loads each row from a separate process (wrk; a Python generator when wrk is missing, and
the table says so), and prints one Markdown table: throughput, p50 and p99, the ratio to the
bare aiohttp ceiling measured in the same run (or to the row's own peer), the issue's target
and whether this run met it; above it the machine and the date. The table and its JSON are also
written to ``--out`` (``perf/reports/``, git-ignored). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from perf.suite.components import bus_rows, cache_rows
from perf.suite.http import HttpBench, RssSampler
from perf.suite.load import load_tool
from perf.suite.machine import describe_machine
from perf.suite.orders import orders_rows
from perf.suite.system import System, launch_system
from perf.suite.table import Row, render
from perf.suite.warming import warming_rows

__all__ = ["main"]

SYSTEM_GROUPS = {"reads", "accounts", "orders", "warming"}
GROUPS = ("reads", "accounts", "orders", "warming", "bus", "cache")
IDLE_TARGET_MB = 90.0
LOADED_TARGET_MB = 150.0


def memory_rows(idle: dict[str, float], peak: dict[str, float]) -> list[Row]:
    """The largest instance's RSS idle and under load, every instance's in the notes."""

    def row(name: str, sizes: dict[str, float], limit: float) -> Row:
        largest = max(sizes.values()) if sizes else None
        return Row(
            group="memory",
            name=name,
            throughput=largest,
            unit="MB (largest instance)",
            target=f"<= {limit:.0f} MB",
            met=largest <= limit if largest is not None else None,
            note=", ".join(f"{role} {mb:.0f}" for role, mb in sorted(sizes.items())),
        )

    return [
        row("RSS per instance, idle", idle, IDLE_TARGET_MB),
        row("RSS per instance, under load (peak)", peak, LOADED_TARGET_MB),
    ]


def _system_rows(system: System, args: argparse.Namespace, tool: str) -> list[Row]:
    idle = system.rss_mb()
    bench = HttpBench(system, seconds=args.seconds, connections=args.connections, tool=tool)
    with RssSampler(system) as sampler:
        bench.peers()
        if "reads" in args.only:
            bench.reads()
        if "accounts" in args.only:
            bench.accounts()
        if "orders" in args.only:
            bench.rows += orders_rows(system, seconds=max(args.seconds * 2, 5.0))
    rows = [*bench.rows, *memory_rows(idle, sampler.peak)]
    if "warming" in args.only:
        rows += warming_rows(
            system, window=args.warm_window, connections=args.connections, tool=tool
        )
    return rows


def run(args: argparse.Namespace) -> int:
    """Measure every row and print the table."""
    machine = describe_machine()
    tool = load_tool()
    if tool != "wrk":
        print(
            "wrk is not installed: the load comes from the Python fallback generator, which "
            "saturates before the servers do (install wrk: apt-get install wrk)",
            file=sys.stderr,
        )
    rows: list[Row] = []
    changes: list[str] = []
    started = time.monotonic()
    if SYSTEM_GROUPS & set(args.only):
        with launch_system(products=args.products, reports=args.out) as system:
            changes = system.changes
            rows += _system_rows(system, args, tool)
    if "bus" in args.only:
        rows += bus_rows(seconds=min(args.seconds, 3.0), rounds=3)
    if "cache" in args.only:
        rows += cache_rows(rounds=3 if args.seconds < 3 else 5)
    table = render(rows)
    header = ["# aioshop benchmark", "", *machine.lines(), ""]
    footer = [
        "",
        "The system ran as `aioshop up` with its shipped defaults (log level INFO, JSON logs, "
        "metrics on), except:",
        *[f"- {change}" for change in changes],
        "",
        f"HTTP rows of {args.seconds:g} s each, {args.connections} connections, after a "
        "discarded 1 s warm-up. The orders rows place orders from a Python client in the "
        "benchmark's process (wrk cannot follow a saga to its end) and read completion from the "
        "orders database. The bus and cache rows measure those parts alone (perf.bench_bus, "
        "perf.bench_cache) beside their peers, on the same servers, in the same run. "
        f"The whole run took {time.monotonic() - started:.0f} s.",
    ]
    text = "\n".join([*header, table, *footer])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text + "\n")
    (args.out / "bench.json").write_text(
        json.dumps({"machine": machine.__dict__, "rows": [row.as_dict() for row in rows]}, indent=2)
        + "\n"
    )
    print(f"\nwritten: {args.out / 'bench.md'}, {args.out / 'bench.json'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m perf.suite", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per row (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="per HTTP row (default 32)")
    parser.add_argument("--products", type=int, default=1000, help="catalog size (default 1000)")
    parser.add_argument(
        "--warm-window",
        type=float,
        default=60.0,
        help="seconds after a new products instance is ready, with and without warming (60)",
    )
    parser.add_argument("--out", type=Path, default=Path("perf/reports"))
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        default=list(GROUPS),
        help="measure only these groups (with any group of the system, the peers run too: "
        "they are the baseline)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warm_window <= 0 or args.connections < 1 or args.products < 20:
        parser.error(
            "--seconds and --warm-window must be > 0, --connections >= 1, --products >= 20"
        )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
