"""The argument parser of ``aioshop``: its commands, their options and help texts."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
from collections.abc import Callable

from services import registry
from services.cli.admin import cmd_create_admin, cmd_keygen, cmd_migrate, cmd_seed
from services.cli.bus import cmd_bus
from services.cli.serve import cmd_serve
from services.cli.up import cmd_up

__all__ = ["build_parser"]


def _version() -> str:
    try:
        return importlib.metadata.version("aioshop")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


_EPILOG = """\
examples:
  aioshop up                     everything on this machine, until Ctrl-C
  aioshop serve products         one process (what a container runs)
  aioshop migrate                create and update the databases

Settings come from environment variables and a .env file (see the README).
aioshop COMMAND --help tells more about a command.
"""


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command imported when it runs: backups and restarts need nothing at start-up."""

    def run(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return command(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``aioshop``."""
    parser = argparse.ArgumentParser(
        prog="aioshop",
        description="Run and manage aioshop: its services, gateway and dashboard.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    roles = ", ".join(registry.ROLES)
    serve = sub.add_parser(
        "serve",
        help="run one part of the system in this process",
        description=(
            "Run one part of the system in this process until Ctrl-C or SIGTERM: a service "
            "(users, products, orders), the gateway, or the dashboard (web). Every process of "
            "aioshop is started this way, in containers and by `aioshop up`. Logs go to stderr: "
            "readable lines on a terminal, JSON otherwise (LOG_FORMAT=text or json to choose)."
        ),
    )
    serve.add_argument("role", choices=registry.ROLES, metavar="ROLE", help=f"one of {roles}")
    serve.add_argument(
        "--port", type=int, default=None, help="port to listen on (default: from the settings)"
    )
    serve.add_argument(
        "--host", default=None, help="address to listen on (default: $HOST, else 127.0.0.1)"
    )
    serve.add_argument(
        "--certfile",
        default=None,
        metavar="FILE",
        help="gateway only: a PEM certificate chain, to serve HTTPS",
    )
    serve.add_argument(
        "--keyfile", default=None, metavar="FILE", help="gateway only: its private key (PEM)"
    )
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser(
        "migrate",
        help="create and update the service databases",
        description=(
            "Create each service's database if it does not exist and bring its tables up to "
            "date. Safe to run again."
        ),
    )
    migrate.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"only these (any of {', '.join(registry.SERVICES)}; default: all)",
    )
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser(
        "create-admin",
        help="create an admin account",
        description=(
            "Create an account with the admin role. The password is asked for on a terminal, "
            "read from the first line of standard input otherwise, or from --password-env."
        ),
    )
    admin.add_argument("email", help="the admin's email address")
    admin.add_argument(
        "--password-env", metavar="VAR", help="read the password from environment variable VAR"
    )
    admin.add_argument("--full-name", default="Administrator", help="default: Administrator")
    admin.add_argument(
        "--promote-existing",
        action="store_true",
        help="if the email has an account, make it an admin and set its password to the one "
        "given (ending its sessions)",
    )
    admin.set_defaults(func=cmd_create_admin)

    up = sub.add_parser(
        "up",
        help="run the whole system on this machine until Ctrl-C",
        description=(
            "Migrate the databases, then run every service, the dashboard and the gateway, each "
            "as its own process (`aioshop serve ROLE`), print their addresses and wait. Ctrl-C "
            "stops everything. With no PostgreSQL, Redis or RabbitMQ around, everything runs in "
            "one process on embedded servers instead."
        ),
    )
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--no-migrate", action="store_true", help="do not migrate the databases first")
    up.add_argument("--no-gateway", action="store_true", help="run only the services")
    up.add_argument(
        "--embedded",
        action="store_true",
        help="everything in one process on embedded PostgreSQL and Redis (the default when "
        "no server is configured or running)",
    )
    up.add_argument(
        "--demo",
        type=int,
        default=0,
        metavar="N",
        help="put N example products in an empty catalog first (default 0: none)",
    )
    up.add_argument(
        "--data-dir",
        default=".aioshop",
        help="where the embedded mode keeps its data (default ./.aioshop)",
    )
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N instances of SERVICE behind the gateway (e.g. products=2); repeatable",
    )
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus (:9090) and Alertmanager (:9093) when installed, alerting "
        "into the dashboard (PROMETHEUS_PORT, ALERTMANAGER_PORT)",
    )
    up.set_defaults(func=cmd_up)

    restart = sub.add_parser(
        "restart",
        help="replace a service's instances one by one, under a running `aioshop up`",
        description=(
            "Ask the running `aioshop up` (started from this directory) to replace every "
            "instance of SERVICE, one at a time: each drains (taken out of rotation, its "
            "requests finished) before it stops, and the next one waits until the new one is "
            "ready. With two or more instances no request fails."
        ),
    )
    restart.add_argument(
        "service", choices=registry.ROLES, metavar="SERVICE", help=f"one of {roles}"
    )
    restart.add_argument(
        "--data-dir",
        default=".aioshop",
        help="where `aioshop up` keeps its state (default ./.aioshop)",
    )
    restart.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (300)"
    )
    restart.set_defaults(func=_lazy("services.cli.restart", "cmd_restart"))

    logs = sub.add_parser(
        "logs",
        help="every process's log lines in time order, filtered; -f to follow",
        description=(
            "Merge the log files that `aioshop up` has every process write in "
            "<data-dir>/logs (rotated ones included) into one log in time order, keep the "
            "lines that match, and print them as text lines (or, with --json, as written)."
        ),
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then print new lines as they come (Ctrl-C)"
    )
    logs.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="S",
        help="only this service (products) or process (products-1); repeatable, or comma-separated",
    )
    logs.add_argument(
        "--level", default=None, metavar="L", help="only this level and above (e.g. WARNING)"
    )
    logs.add_argument(
        "--correlation-id", default=None, metavar="X", help="only the lines of this correlation id"
    )
    logs.add_argument(
        "--since",
        default=None,
        metavar="T",
        help="only lines from T on: a duration back from now (90s, 15m, 2h, 1d) or an ISO time",
    )
    logs.add_argument(
        "--data-dir",
        default=".aioshop",
        help="where `aioshop up` keeps its state and logs (default ./.aioshop)",
    )
    logs.add_argument("--json", action="store_true", help="print the JSON lines as written")
    logs.set_defaults(func=_lazy("services.cli.logs", "cmd_logs"))

    backup = sub.add_parser(
        "backup",
        help="write a consistent backup of every service database and the broker's definitions",
        description=(
            "Dump each service database (pg_dump, custom format) and the broker's definitions "
            "into a new directory, with a manifest of checksums. Needs pg_dump."
        ),
    )
    backup.add_argument(
        "--dir",
        default=None,
        metavar="D",
        help="where to write it (default: backups/<UTC time>)",
    )
    backup.set_defaults(func=_lazy("services.cli.backup", "cmd_backup"))

    restore = sub.add_parser(
        "restore",
        help="restore a backup written by `aioshop backup`",
        description=(
            "Check the backup's manifest, then restore each service database into an empty "
            "one (created if missing). A database that holds data is left alone unless "
            "--force is given. Needs pg_restore."
        ),
    )
    restore.add_argument("dir", metavar="D", help="a directory written by `aioshop backup`")
    restore.add_argument(
        "--force", action="store_true", help="replace databases that are not empty"
    )
    restore.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"only these (any of {', '.join(registry.SERVICES)}; default: all in the backup)",
    )
    restore.set_defaults(func=_lazy("services.cli.backup", "cmd_restore"))

    bus = sub.add_parser(
        "bus",
        help="look at and resend messages the services could not handle",
        description=(
            "Messages a service failed to handle, after its retries, are parked on a side "
            "queue. List them, or send them back to their queue once the cause is fixed."
        ),
    )
    bus.add_argument(
        "--timeout", type=float, default=30.0, help="give up after this many seconds (default 30)"
    )
    bus_sub = bus.add_subparsers(dest="bus_command", required=True, metavar="ACTION")
    parked = bus_sub.add_parser("parked", help="list a queue's parked messages")
    parked.add_argument("queue", help="the queue's name (a service's, e.g. orders)")
    parked.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    parked.add_argument("-v", "--verbose", action="store_true", help="print their bodies too")
    replay = bus_sub.add_parser("replay", help="send a queue's parked messages back to it")
    replay.add_argument("queue", help="the queue's name (a service's, e.g. orders)")
    replay.add_argument("--limit", type=int, default=None, help="at most this many (default all)")
    bus.set_defaults(func=cmd_bus)

    seed = sub.add_parser(
        "seed",
        help="fill the catalog with realistic example products",
        description="Add generated products and categories to the products database.",
    )
    seed.add_argument("--products", type=int, required=True, metavar="N", help="how many products")
    seed.add_argument(
        "--categories", type=int, default=40, metavar="M", help="how many categories (default 40)"
    )
    seed.add_argument(
        "--batch-size",
        type=int,
        default=5000,
        metavar="B",
        help="products written per statement (default 5000)",
    )
    seed.add_argument(
        "--seed", type=int, default=None, help="a number, to generate the same content again"
    )
    seed.set_defaults(func=cmd_seed)

    keygen = sub.add_parser(
        "keygen",
        help="print a new key pair for signing login tokens",
        description=(
            "Print a new Ed25519 key pair as JWT_PRIVATE_KEY=... and JWT_PUBLIC_KEY=... lines, "
            "ready for a .env file. Only the users service needs the private key."
        ),
    )
    keygen.set_defaults(func=cmd_keygen)

    from services.orders.commands import add_commands as add_orders_commands

    add_orders_commands(sub)
    return parser
