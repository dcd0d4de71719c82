"""aioshop: run and manage the shop.

Every process of the system is one `aioshop serve ROLE`; `aioshop up` runs them all on this
machine. Settings come from environment variables (and a .env file): see the README.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.metadata
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, ValidationError
from pydantic_settings import SettingsError

from core.logging import configure_logging, log_format
from core.settings import BaseServiceSettings, describe_settings_error, load_settings
from services import registry

if TYPE_CHECKING:
    from core.bus import Transport

__all__ = ["StartupFailed", "build_parser", "censor_url", "describe_unreachable", "main"]

log = logging.getLogger("services.cli")


class StartupFailed(Exception):
    """A command could not start: ``str(exc)`` is the one line that says why."""


def _database_url(settings: Any) -> str:
    return str(settings.database_url)


# (top-level package of a client library, the server it talks to, the settings field of its URL)
_SERVERS: tuple[tuple[str, str, str], ...] = (
    ("asyncpg", "PostgreSQL", "database_url"),
    ("psycopg", "PostgreSQL", "database_url"),
    ("redis", "Redis", "redis_url"),
    ("aiormq", "RabbitMQ", "amqp_url"),
    ("aio_pika", "RabbitMQ", "amqp_url"),
    ("pymongo", "MongoDB", "mongodb_url"),
    ("motor", "MongoDB", "mongodb_url"),
    ("aiomcache", "memcached", "memcached_url"),
)
_CONNECTION_ERRORS = {
    "ConnectionError",
    "TimeoutError",
    "AuthenticationError",
    "AMQPConnectionError",
}
_SECRET_QUERY_KEYS = ("password", "secret", "token")


def censor_url(url: str) -> str:
    """``url`` with its password (and any password-like query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an invalid URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if any(word in k.lower() for word in _SECRET_QUERY_KEYS) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _package(module: object) -> str:
    return str(module or "").partition(".")[0]


def _frames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield _package(tb.tb_frame.f_globals.get("__name__"))
        tb = tb.tb_next


def _server_of(exc: BaseException) -> tuple[str, str] | None:
    """(server, settings field) of the client library that raised ``exc``, if it is one."""
    known = {package: (server, field) for package, server, field in _SERVERS}
    for error in _chain(exc):
        found = known.get(_package(type(error).__module__))
        if found is not None:
            return found
    for error in _chain(exc):
        if isinstance(error, OSError):  # raised by the socket layer: whose call was it?
            for package in reversed(list(_frames(error.__traceback__))):
                if package in known:
                    return known[package]
    return None


_UNREACHABLE = "cannot reach {server}{where} ({detail}); check that it is running there and {var}"


def _reason(exc: BaseException) -> str | None:
    """The message template (``{server}``, ``{where}``, ``{var}``) for an ``exc`` that means a
    server could not be reached or would not let this process in; ``None`` for anything else."""
    for error in _chain(exc):
        sqlstate = str(getattr(error, "sqlstate", "") or "")
        if sqlstate == "3D000":
            return (
                "{server}{where} has no such database; run `aioshop migrate` (it creates it) "
                "or check {var}"
            )
        if sqlstate.startswith("28"):
            return "{server}{where} refused the user name or password; check {var}"
        if sqlstate in ("57P03", "53300") or sqlstate.startswith("08"):
            return "{server}{where} does not take connections now; check the server and {var}"
        if isinstance(error, ConnectionRefusedError):
            return _UNREACHABLE.replace("{detail}", "connection refused")
        if isinstance(error, socket.gaierror):
            return "cannot reach {server}{where} (unknown host name); check {var}"
        if isinstance(error, TimeoutError):
            return _UNREACHABLE.replace("{detail}", "no answer in time")
        names = {cls.__name__ for cls in type(error).__mro__}
        if "AuthenticationError" in names:
            return "{server}{where} refused the password; check {var}"
        if isinstance(error, OSError) or names & _CONNECTION_ERRORS:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else None
            return _UNREACHABLE.replace("{detail}", (detail or "cannot connect").lower())
    return None


def _variable(settings: BaseServiceSettings, field: str) -> str:
    info = type(settings).model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0].upper()
    if isinstance(alias, str):
        return alias.upper()
    return field.upper()


def describe_unreachable(exc: BaseException, settings: BaseServiceSettings | None) -> str | None:
    """One line for a start-up that failed on a server it could not reach or use: which server,
    where (password censored), what to check; ``None`` if ``exc`` is no such failure."""
    server = _server_of(exc)
    reason = _reason(exc)
    if server is None or reason is None:
        return None
    name, field = server
    url = getattr(settings, field, None) if settings is not None else None
    where = f" at {censor_url(str(url))}" if url else ""
    variable = _variable(settings, field) if settings is not None else field.upper()
    return reason.format(server=name, where=where, var=variable)


def _startup_failure(
    exc: Exception, settings: BaseServiceSettings | Callable[[], BaseServiceSettings]
) -> StartupFailed | None:
    """``StartupFailed`` with the line of ``describe_unreachable``, or ``None`` (``settings``:
    loaded only when needed)."""
    if _server_of(exc) is None or _reason(exc) is None:
        return None
    loaded: BaseServiceSettings | None
    try:
        loaded = settings() if callable(settings) else settings
    except (ValidationError, SettingsError):  # pragma: no cover: they loaded once already
        loaded = None
    line = describe_unreachable(exc, loaded)
    if line is None:  # pragma: no cover: checked above
        return None
    log.debug("start-up failed", exc_info=exc)
    return StartupFailed(line)


def _serve_service(name: str, overrides: dict[str, Any]) -> int:
    from core.runner import run  # looked up at call time: tests replace it

    entry = registry.get(name)
    settings = load_settings(entry.settings, **overrides)
    configure_logging(entry.name, level=settings.log_level, fmt=log_format(settings))
    app = entry.app_factory()(settings)
    run(app, host=settings.host, port=settings.port)
    return 0


def _role_settings(role: str, overrides: dict[str, Any]) -> BaseServiceSettings:
    if role == "gateway":
        from gateway.settings import Settings as GatewaySettings

        return GatewaySettings(**overrides)
    if role == "web":
        from web.settings import Settings as WebSettings

        return WebSettings(**overrides)
    return registry.get(role).settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one role (a service, the gateway or the dashboard) in this process until
    SIGINT/SIGTERM."""
    if (args.certfile or args.keyfile) and args.role != "gateway":
        print("--certfile and --keyfile are for the gateway only", file=sys.stderr)
        return 2
    if (args.certfile is None) != (args.keyfile is None):
        print("--certfile and --keyfile go together", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    try:
        if args.role == "gateway":
            from gateway.__main__ import serve as serve_gateway

            return serve_gateway(
                host=args.host, port=args.port, certfile=args.certfile, keyfile=args.keyfile
            )
        if args.role == "web":
            from web.__main__ import serve as serve_web

            return serve_web(host=args.host, port=args.port)
        return _serve_service(args.role, overrides)
    except Exception as exc:
        failure = _startup_failure(exc, lambda: _role_settings(args.role, overrides))
        if failure is None:
            raise
        raise StartupFailed(f"{args.role}: {failure}") from exc


def _migrate(names: Sequence[str]) -> None:
    import migrations

    for name in names:
        entry = registry.get(name)
        if entry.migrated:
            settings = entry.settings()
            try:
                migrations.upgrade(name, _database_url(settings))
            except Exception as exc:
                failure = _startup_failure(exc, settings)
                if failure is None:
                    raise
                raise StartupFailed(f"cannot migrate {name}: {failure}") from exc
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
        return run_embedded(args.host, Path(args.data_dir), demo_products=args.demo)
    if not args.no_migrate:
        _migrate(list(registry.SERVICES))
    if args.demo:
        _seed_demo(_database_url(registry.get("products").settings()), args.demo)
    environment = child_environment(registry.get("users").settings(), sys.stderr)
    processes = plan(args.host, replicas, gateway=not args.no_gateway, environment=environment)
    return Supervisor(processes, args.host).run()


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
    up.set_defaults(func=cmd_up)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aioshop`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ValidationError, SettingsError) as exc:
        # Invalid settings are the operator's to fix: one line, never a traceback or a value.
        print(describe_settings_error(exc), file=sys.stderr)
        return 1
    except StartupFailed as exc:  # a server that cannot be reached: one line, no traceback
        print(exc, file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
