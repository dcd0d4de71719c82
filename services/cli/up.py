"""``aioshop up``: the whole system on this machine, as processes (``services.up``) or, with no
server around, in one process on embedded servers (``services.embedded``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from core.logfiles import log_directory
from core.logging import configure_logging
from services import registry
from services.cli.admin import database_url, migrate_databases

__all__ = ["cmd_up"]


def _seed_demo(dsn: str, products: int) -> None:
    """Seed an empty catalog with ``products`` products (for ``aioshop up --demo N``)."""
    from services.products.seed import seed_if_empty

    report = asyncio.run(seed_if_empty(dsn, products))
    if report is None:
        print("the catalog has products already: not seeding", file=sys.stderr)
    else:
        print(f"seeded {report.products} demo products in {report.seconds:.1f} s", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, start every service (with replicas), the dashboard and the gateway as their own
    processes, print the URLs, keep them running (a crashed one is started again), stop all on
    Ctrl-C. ``aioshop restart`` finds it through ``--data-dir``."""
    from services.up import Supervisor, child_environment, parse_replicas, plan

    # This process only speaks up for warnings (the development-key one, once for everybody).
    configure_logging("aioshop", level="WARNING", process="aioshop")
    try:
        replicas = parse_replicas(args.replicas)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    from services.embedded import run_embedded, servers_available

    embedded = args.embedded
    if not embedded and not servers_available():
        print(
            "no PostgreSQL, Redis or RabbitMQ is configured or answering on its standard port: "
            "running embedded (one process, in-memory bus, embedded PostgreSQL and Redis)",
            file=sys.stderr,
        )
        embedded = True
    if embedded:
        if replicas:
            print(
                "--replicas needs real servers; the embedded mode runs one of each", file=sys.stderr
            )
            return 2
        if args.monitoring:
            print("--monitoring needs the process mode: running without it", file=sys.stderr)
        return run_embedded(args.host, Path(args.data_dir), demo_products=args.demo)
    if not args.no_migrate:
        migrate_databases(list(registry.SERVICES))
    if args.demo:
        _seed_demo(database_url(registry.get("products").settings()), args.demo)
    environment = child_environment(registry.get("users").settings(), sys.stderr)
    log_dir = log_directory(Path(args.data_dir))  # every process's log file (aioshop logs)
    processes = plan(
        args.host,
        replicas,
        gateway=not args.no_gateway,
        environment=environment,
        log_dir=log_dir,
    )
    from services.monitoring import MonitoringError, TargetsFile, with_monitoring

    data_dir = Path(args.data_dir)
    if args.monitoring:
        try:
            processes = with_monitoring(processes, args.host, data_dir)
        except MonitoringError as exc:
            print(exc, file=sys.stderr)
            return 2
    targets = TargetsFile.in_dir(data_dir)  # Prometheus's file_sd targets, kept up to date
    return Supervisor(processes, args.host, data_dir=data_dir, on_state=targets.update).run()
