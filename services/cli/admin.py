"""The commands that prepare and maintain the data: ``aioshop migrate``, ``create-admin``,
``seed`` and ``keygen``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from services import registry
from services.cli.startup import StartupFailed, startup_failure

__all__ = [
    "cmd_create_admin",
    "cmd_keygen",
    "cmd_migrate",
    "cmd_seed",
    "database_url",
    "migrate_databases",
]


def database_url(settings: Any) -> str:
    return str(settings.database_url)


def migrate_databases(names: Sequence[str]) -> None:
    import migrations

    for name in names:
        entry = registry.get(name)
        if entry.migrated:
            settings = entry.settings()
            try:
                migrations.upgrade(name, database_url(settings))
            except Exception as exc:
                failure = startup_failure(exc, settings)
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
    migrate_databases(args.services or list(registry.SERVICES))
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
    migrate_databases(["users"])
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
    migrate_databases(["products"])
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


def cmd_keygen(args: argparse.Namespace) -> int:
    """Print a new Ed25519 key pair as environment assignments."""
    from core.auth.keygen import generate_key_pair

    private, public = generate_key_pair()
    print(f'JWT_PRIVATE_KEY="{private.strip()}"')
    print(f'JWT_PUBLIC_KEY="{public.strip()}"')
    return 0
