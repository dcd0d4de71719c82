"""``python -m ops.chaos [--profile short|full]`` (``make chaos``): the fault-injection suite.

Runs ``aioshop up --replicas orders=2,products=2`` on a Redis, memcached and RabbitMQ node of
its own, its databases behind a PostgreSQL fault proxy, under a steady Locust load (the
scenarios of ``perf/locustfile.py``), injects the faults one after another and prints one table:
fault, duration, requests during it (and its recovery), client errors by status, recovery time,
invariant violations. The table and its JSON go to ``--out`` (``ops/reports/``, git-ignored).
Exit status 1 when an invariant is violated or the system did not recover from a fault.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops.chaos.faults import FAULTS
from ops.chaos.run import PROFILES, run, select

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run, 0 when every row is clean."""
    keys = ", ".join(fault.key for fault in FAULTS)
    parser = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__)
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="full: faults of 10-20 s under 30 users (a few minutes); short: 3-5 s faults under "
        "10 users (CI, under 4 minutes)",
    )
    parser.add_argument("--only", action="append", default=[], help=f"run only these: {keys}")
    parser.add_argument("--skip", action="append", default=[], help="leave these out")
    parser.add_argument(
        "--out", type=Path, default=Path("ops/reports"), help="where the table goes"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the servers' and the system's logs"
    )
    parser.add_argument(
        "--proxy",
        action="append",
        default=[],
        choices=["redis", "memcached", "rabbitmq"],
        help="put a fault proxy in front of this shared server instead of starting one of the "
        "run's own (the default where its program is missing); repeatable",
    )
    args = parser.parse_args(argv)
    only = [k for spec in args.only for k in spec.split(",") if k]
    skip = [k for spec in args.skip for k in spec.split(",") if k]
    try:
        faults = select(only, skip)
    except ValueError as exc:
        parser.error(str(exc))
    rows, report = run(
        PROFILES[args.profile],
        faults,
        reports=args.out,
        keep=args.keep,
        proxied=args.proxy,
    )
    print(f"\nreport: {report} (and .json)", file=sys.stderr)
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
