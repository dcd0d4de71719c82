"""The ``aioshop`` command line: serve, migrate, create-admin, up, keygen, bus, seed, orders."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from core.logging import configure_logging
from core.settings import describe_settings_error, load_settings
from services import registry

if TYPE_CHECKING:
    from core.bus import Transport

__all__ = ["main"]


def _database_url(settings: Any) -> str:
    return str(settings.database_url)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one service in this process until SIGINT/SIGTERM."""
    from core.runner import run

    entry = registry.get(args.service)
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    settings = load_settings(entry.settings, **overrides)
    configure_logging(entry.name, level=settings.log_level, fmt=settings.log_format)
    app = entry.app_factory()(settings)
    run(app, host=settings.host, port=settings.port)
    return 0


def _migrate(names: Sequence[str]) -> None:
    import migrations

    for name in names:
        entry = registry.get(name)
        if entry.migrated:
            migrations.upgrade(name, _database_url(entry.settings()))
            print(f"migrated {name}", file=sys.stderr)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create each service's database if missing and migrate it to head."""
    unknown = sorted(set(args.services) - set(registry.SERVICES))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    _migrate(args.services or list(registry.SERVICES))
    return 0


def _read_password(env_var: str | None) -> str:
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise SystemExit(f"environment variable {env_var} is not set or empty")
        return value
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise SystemExit("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_create_admin(args: argparse.Namespace) -> int:
    """Create an admin; with ``--promote-existing``, make an existing account one."""
    from pydantic import TypeAdapter

    from services.users.schemas import Email, Password

    try:
        email = TypeAdapter(Email).validate_python(args.email)
        password = TypeAdapter(Password).validate_python(_read_password(args.password_env))
    except ValidationError as exc:
        print(f"invalid input: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    _migrate(["users"])
    from services.users.service import AdminExists

    try:
        user = asyncio.run(
            _create_admin(email, password, args.full_name, promote=args.promote_existing)
        )
    except AdminExists:
        print(
            f"an account with the email {email} exists already; to make it an admin and set "
            "its password to the one given, run again with --promote-existing",
            file=sys.stderr,
        )
        return 1
    print(f"admin {user.email} ({user.id}) roles={','.join(user.roles)}")
    return 0


async def _create_admin(email: str, password: str, full_name: str, *, promote: bool) -> Any:
    from core.auth import PasswordHasher, RevocationStore
    from core.bus import Outbox
    from core.db import create_pool
    from core.redis import create_redis
    from services.users import Settings
    from services.users.repository import UsersRepository
    from services.users.service import UsersService

    settings = Settings()
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    redis = create_redis(settings.redis_url)
    try:
        from core.app import token_codec

        service = UsersService(
            UsersRepository(pool),
            hasher=PasswordHasher(rounds=settings.bcrypt_rounds),
            codec=token_codec(settings, signing=True),
            revocations=RevocationStore(
                redis, namespace=settings.redis_namespace, access_ttl=settings.access_token_ttl
            ),
            # Events are recorded now and relayed by the running users service.
            outbox=Outbox("users"),
        )
        return await service.create_admin(
            email=email, password=password, full_name=full_name, promote_existing=promote
        )
    finally:
        await pool.close()
        await redis.aclose()


def cmd_seed(args: argparse.Namespace) -> int:
    """Fill the products database with a realistic catalog (``services.products.seed``)."""
    if args.products < 0 or args.categories < 1 or args.batch_size < 1:
        print("--products >= 0, --categories >= 1 and --batch-size >= 1", file=sys.stderr)
        return 2
    _migrate(["products"])
    return asyncio.run(_seed(args))


async def _seed(args: argparse.Namespace) -> int:
    from services.products import Settings
    from services.products.seed import ProgressBar, invalidate_cache, seed

    settings = Settings()
    report = await seed(
        settings.database_url,
        products=args.products,
        categories=args.categories,
        batch_size=args.batch_size,
        random_seed=args.seed,
        progress=ProgressBar("seeding products"),
    )
    if not await invalidate_cache(settings):
        print("Redis unreachable: running instances show cached listings until they expire")
    rate = report.products / report.seconds if report.seconds else 0.0
    print(
        f"seeded {report.products} products (SKUs {report.sku_prefix}-*) in "
        f"{report.categories} categories in {report.seconds:.1f} s ({rate:,.0f} products/s)"
    )
    return 0


def _seed_demo(dsn: str, products: int) -> None:
    """Seed an empty catalog with ``products`` products (for ``aioshop up --demo N``)."""
    from services.products.seed import seed_if_empty

    report = asyncio.run(seed_if_empty(dsn, products))
    if report is None:
        print("the catalog has products already: not seeding", file=sys.stderr)
    else:
        print(f"seeded {report.products} demo products in {report.seconds:.1f} s", file=sys.stderr)


def cmd_bus(args: argparse.Namespace) -> int:
    """Inspect or replay a queue's parked messages."""
    return asyncio.run(_bus(args))


async def _bus(args: argparse.Namespace) -> int:
    from core.bus import make_transport
    from core.settings import BaseServiceSettings

    transport = make_transport(BaseServiceSettings())
    await transport.start()
    try:
        async with asyncio.timeout(args.timeout):
            return await _bus_command(transport, args)
    except TimeoutError:
        print(f"the broker did not answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    finally:
        await transport.stop()


async def _bus_command(transport: Transport, args: argparse.Namespace) -> int:
    if args.bus_command == "replay":
        moved = await transport.replay(args.queue, limit=args.limit)
        print(f"replayed {moved} message(s) to {args.queue}")
        return 0
    parked = await transport.parked(args.queue, limit=args.limit)
    for message in parked:
        print(
            f"{message.message_id}  {message.routing_key}  attempts={message.attempts}"
            f"  reason={message.reason}"
        )
        if args.verbose:
            print(f"    {message.body.decode('utf-8', 'replace')}")
    print(f"{len(parked)} parked message(s) on {args.queue}", file=sys.stderr)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new Ed25519 key pair as environment assignments."""
    from core.auth.keygen import generate_key_pair

    private, public = generate_key_pair()
    print(f'JWT_PRIVATE_KEY="{private.strip()}"')
    print(f'JWT_PUBLIC_KEY="{public.strip()}"')
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, start every service (with replicas), the dashboard and the gateway as their own
    processes, print the URLs, stop all on Ctrl-C."""
    from services.up import Supervisor, parse_replicas, plan

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
        return run_embedded(args.host, Path(args.data_dir), demo_products=args.demo)
    if not args.no_migrate:
        _migrate(list(registry.SERVICES))
    if args.demo:
        _seed_demo(_database_url(registry.get("products").settings()), args.demo)
    processes = plan(args.host, replicas, gateway=not args.no_gateway)
    return Supervisor(processes, args.host).run()


def _version() -> str:
    try:
        return importlib.metadata.version("aioshop")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``aioshop``."""
    parser = argparse.ArgumentParser(prog="aioshop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", choices=sorted(registry.SERVICES))
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--host", default=None)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="create and migrate the service databases")
    migrate.add_argument("services", nargs="*", help=f"any of {', '.join(registry.SERVICES)}")
    migrate.set_defaults(func=cmd_migrate)

    admin = sub.add_parser("create-admin", help="create an admin account")
    admin.add_argument("email")
    admin.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    admin.add_argument("--full-name", default="Administrator")
    admin.add_argument(
        "--promote-existing",
        action="store_true",
        help="if the email has an account, make it an admin and set its password to the one "
        "given (ending its sessions)",
    )
    admin.set_defaults(func=cmd_create_admin)

    up = sub.add_parser(
        "up", help="migrate and run every service, the dashboard and the gateway until Ctrl-C"
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--no-migrate", action="store_true")
    up.add_argument("--no-gateway", action="store_true", help="only the services")
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
        help="seed an empty catalog with N products first (aioshop seed's realistic data)",
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
    up.set_defaults(func=cmd_up)

    bus = sub.add_parser("bus", help="inspect and replay parked bus messages")
    bus.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    bus_sub = bus.add_subparsers(dest="bus_command", required=True)
    parked = bus_sub.add_parser("parked", help="list a queue's parked messages")
    parked.add_argument("queue")
    parked.add_argument("--limit", type=int, default=100)
    parked.add_argument("-v", "--verbose", action="store_true", help="print bodies too")
    replay = bus_sub.add_parser("replay", help="send a queue's parked messages back to it")
    replay.add_argument("queue")
    replay.add_argument("--limit", type=int, default=None)
    bus.set_defaults(func=cmd_bus)

    seed = sub.add_parser("seed", help="fill the products database with a realistic catalog")
    seed.add_argument("--products", type=int, required=True, metavar="N")
    seed.add_argument("--categories", type=int, default=40, metavar="M")
    seed.add_argument("--batch-size", type=int, default=5000, metavar="B")
    seed.add_argument("--seed", type=int, default=None, help="random seed of the content")
    seed.set_defaults(func=cmd_seed)

    keygen = sub.add_parser("keygen", help="print a new JWT key pair")
    keygen.set_defaults(func=cmd_keygen)

    from services.orders.commands import add_commands as add_orders_commands

    add_orders_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aioshop`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ValidationError, SettingsError) as exc:
        # Invalid settings are the operator's to fix: one line, never a traceback or a value.
        print(describe_settings_error(exc), file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
