"""Settings from the environment (pydantic-settings), one class per service sharing this base.

Every default points at a local server on its standard port so that a developer's machine works
with no configuration. Where a value comes from, first match wins:

1. arguments (the command line's ``--host``/``--port``);
2. the environment variable (``REDIS_URL``), or the file named by ``<NAME>_FILE``
   (``REDIS_URL_FILE=/run/secrets/redis_url``: the Docker/Kubernetes convention, trailing newline
   stripped); setting both is an error;
3. the ``.env`` file;
4. a file named after the variable in the directory ``AIOSHOP_SECRETS_DIR`` (unset by default);
5. the default.

The JWT key pair default is the public development pair of ``core.auth.devkeys``. It is refused
with ``AIOSHOP_ENV=production``, and by a process listening on anything but a loopback address
unless ``AIOSHOP_ENV=development`` was set explicitly.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY

__all__ = [
    "DEV_KEYS_WARNED_VAR",
    "SECRETS_DIR_VAR",
    "BaseServiceSettings",
    "FileEnvSettingsSource",
    "database_url",
    "describe_settings_error",
    "is_loopback",
    "load_settings",
]

SECRETS_DIR_VAR = "AIOSHOP_SECRETS_DIR"
# Set (to 1) by a parent that printed the development-key warning for its children.
DEV_KEYS_WARNED_VAR = "AIOSHOP_DEV_KEYS_WARNED"
_FILE_SUFFIX = "_FILE"
_LOCAL_PG = "postgresql://postgres@127.0.0.1:5432"
_KEY_HELP = (
    "set JWT_PUBLIC_KEY and JWT_PRIVATE_KEY (PEM), or JWT_PUBLIC_KEY_FILE and "
    "JWT_PRIVATE_KEY_FILE naming files (only the users service signs: the others need only the "
    "public key); `aioshop keygen` makes a pair"
)

_S = TypeVar("_S", bound=BaseSettings)
_log = logging.getLogger("core.settings")


def database_url(name: str) -> str:
    """The development default URL of the database called ``name`` on the local server."""
    return f"{_LOCAL_PG}/{name}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine: 127.0.0.0/8, ::1 or ``localhost``.

    Anything else, including ``0.0.0.0``, ``::``, an empty host (every interface) and any other
    name, counts as reachable from outside.
    """
    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class FileEnvSettingsSource(EnvSettingsSource):
    """Reads a field from the file named by ``<VARIABLE>_FILE``, for every variable of a field.

    ``JWT_PRIVATE_KEY_FILE=/run/secrets/jwt_private_key`` gives ``jwt_private_key`` the file's
    text without its trailing newline. The ``_FILE`` variables are looked up in the environment
    and then in the ``.env`` file (``dotenv``). A field given both directly and through a file is
    an error, and so is a file that cannot be read: a secret is never silently left at its
    default.
    """

    def __init__(
        self, settings_cls: type[BaseSettings], dotenv: Mapping[str, str | None] | None = None
    ) -> None:
        self._dotenv = dict(dotenv or {})
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        def key(name: str) -> str:
            return name if self.case_sensitive else name.lower()

        # The environment wins over .env, as it does for the plain variables.
        variables: dict[str, tuple[str, str | None]] = {
            key(name): (name, value) for name, value in self._dotenv.items()
        }
        variables.update({key(name): (name, value) for name, value in os.environ.items()})
        suffix = key(_FILE_SUFFIX)
        values: dict[str, str | None] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            env_names = [env for _, env, _ in self._extract_field_info(field, field_name)]
            given = [variables[env][0] for env in env_names if env in variables]
            for env in env_names:
                if env + suffix not in variables:
                    continue
                file_var, path = variables[env + suffix]
                if given:
                    raise SettingsError(f"{given[0]} and {file_var} are both set: set only one")
                values[env] = _read_secret_file(file_var, path)
        return values


def _read_secret_file(variable: str, path: str | None) -> str:
    if not path:
        raise SettingsError(f"{variable} is set but empty: it must name a file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SettingsError(f"{variable}: cannot read {path}: {reason}") from None
    return text.rstrip("\r\n")


def _secrets_dir_source(settings_cls: type[BaseSettings]) -> SecretsSettingsSource | None:
    directory = os.environ.get(SECRETS_DIR_VAR)
    if not directory:
        return None
    if not Path(directory).is_dir():
        raise SettingsError(f"{SECRETS_DIR_VAR}={directory} is not a directory")
    return SecretsSettingsSource(settings_cls, secrets_dir=directory)


def _using(value: str | SecretStr | None, dev_value: str) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and value.strip() == dev_value.strip()


@functools.cache
def _warn_development_keys() -> None:
    """Once per process: a warning for every settings object would drown the log. Not at all in
    a process whose parent warned already (``AIOSHOP_DEV_KEYS_WARNED``: ``aioshop up``)."""
    if os.environ.get(DEV_KEYS_WARNED_VAR):
        return
    _log.warning(
        "using the public development JWT key pair: anyone can sign tokens these processes "
        "accept; %s",
        _KEY_HELP,
    )


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """One line saying what is wrong with the settings, without the values (they may be
    secrets)."""
    if isinstance(exc, SettingsError):
        return f"invalid settings: {exc}".replace("\n", " ")
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{where}: {message}" if where else message)
    return ("invalid settings: " + "; ".join(problems)).replace("\n", " ")


def load_settings(factory: Callable[..., _S], /, **overrides: Any) -> _S:
    """``factory(**overrides)``, or ``SystemExit`` with one clear line if the settings are
    invalid (for entry points: no traceback, exit status 1)."""
    try:
        return factory(**overrides)
    except (ValidationError, SettingsError) as exc:
        raise SystemExit(describe_settings_error(exc)) from None


class BaseServiceSettings(BaseSettings):
    """Settings every service shares. Environment variables are the upper-cased field names;
    each can also come from a file (``<NAME>_FILE``, ``AIOSHOP_SECRETS_DIR``: see the module)."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    env: Literal["development", "test", "production"] = Field(
        default="development", validation_alias=AliasChoices("AIOSHOP_ENV", "env")
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = Field(default="aioshop", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    bus_transport: Literal["amqp", "memory"] = "amqp"
    bus_publish_timeout: float = Field(default=5.0, gt=0, le=60)
    # The AMQP exchange every event crosses: systems sharing one broker each take their own.
    bus_exchange: str = Field(default="aioshop.events", pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    # Durable queues as classic (one node) or quorum queues (replicated, RabbitMQ 3.10+), and the
    # deliveries after which a quorum queue parks a message (core.bus.amqp.topology).
    bus_queue_type: Literal["classic", "quorum"] = "classic"
    bus_delivery_limit: int = Field(default=20, ge=1, le=1000)
    # Seconds between the metrics.snapshot events of an instance (the dashboard's feed); 0: none.
    metrics_snapshot_interval: float = Field(default=1.0, ge=0, le=3600)
    memcached_url: str = "memcached://127.0.0.1:11211"
    mongodb_url: str | None = None
    cache_tiers: tuple[Literal["memory", "redis", "memcached"], ...] = (
        "memory",
        "redis",
        "memcached",
    )
    cache_l1_max_entries: int = Field(default=10_000, ge=1)
    cache_l1_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cache_l1_ttl: float = Field(default=1.0, gt=0, le=3600)
    cache_remote_timeout: float = Field(default=0.1, gt=0, le=5)
    cache_breaker_cooldown: float = Field(default=5.0, gt=0, le=300)

    jwt_private_key: SecretStr | None = SecretStr(DEV_PRIVATE_KEY)
    jwt_public_key: str = DEV_PUBLIC_KEY
    jwt_algorithm: Literal["EdDSA", "ES256", "RS256"] = "EdDSA"
    jwt_issuer: str = "aioshop"
    access_token_ttl: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl: int = Field(default=14 * 86_400, ge=300, le=90 * 86_400)

    cors_origins: list[str] = Field(default_factory=list)
    # Proxies (CIDRs: the gateway) whose X-Forwarded-For names the client, for per-client
    # limits (login throttling, anonymous idempotency keys); by default nobody's.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)
    # Peers (CIDRs: the scraper's) that read /metrics without a token; anyone else needs one with
    # metrics:read. Open by default: a service's port is internal (the gateway's is not).
    metrics_allow: list[str] = Field(default_factory=lambda: ["0.0.0.0/0", "::/0"], max_length=64)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    readiness_timeout: float = Field(default=1.0, gt=0, le=30)
    # /readyz details (core.health_details): figures refreshed in the background every
    # HEALTH_DETAILS_INTERVAL seconds, each "warn" past its threshold. A warning fails readiness
    # only with HEALTH_WARN_FAILS_READINESS: a lagging outbox must not empty the rotation.
    health_details_interval: float = Field(default=5.0, gt=0, le=300)
    health_warn_fails_readiness: bool = False
    health_outbox_lag_warn: float = Field(default=60.0, ge=0)
    health_parked_warn: int = Field(default=0, ge=0)
    health_cache_tiers_down_warn: int = Field(default=0, ge=0)
    # Directories whose disk space /metrics reports (disk_free_bytes{kind="data"}), beside the
    # directory of LOG_FILE when that is set.
    data_dirs: list[str] = Field(default_factory=list, max_length=64)
    # Every server's client timeouts (seconds): to receive a request head, to receive its body,
    # and how long an idle keep-alive connection is kept. Slow clients cannot hold connections.
    http_header_timeout: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    http_keepalive_timeout: float = Field(default=15.0, gt=0, le=3600)
    # Idempotency-Key records (core.idempotency): how long one is kept, how many live keys one
    # caller may hold per route (anonymous callers share theirs by address, hence more), and the
    # largest response kept for replay.
    idempotency_ttl: int = Field(default=86_400, ge=60, le=30 * 86_400)
    idempotency_max_keys: int = Field(default=1000, ge=1, le=1_000_000)
    idempotency_max_anonymous_keys: int = Field(default=10_000, ge=1, le=1_000_000)
    idempotency_max_record_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    # Dependency limits (seconds): a statement running longer is cancelled by PostgreSQL; a
    # request waiting longer for a pooled connection gets a 503 instead of queueing without end.
    db_statement_timeout: float = Field(default=30.0, gt=0, le=3600)
    db_acquire_timeout: float = Field(default=5.0, gt=0, le=300)
    # Redis connections per client at most, and how long a call waits for a free one.
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout: float = Field(default=2.0, gt=0, le=60)
    # Graceful stop on SIGTERM/SIGINT: /readyz answers 503 for SHUTDOWN_DRAIN_DELAY seconds while
    # the instance still serves (balancers take it out of rotation), then it stops accepting and
    # finishes the requests in flight for at most SHUTDOWN_TIMEOUT seconds.
    shutdown_drain_delay: float = Field(default=0.0, ge=0, le=300)
    shutdown_timeout: float = Field(default=10.0, gt=0, le=600)
    # Service discovery (core.discovery) of instance lists written dns+http://name:port: every
    # DISCOVERY_INTERVAL seconds and after an instance fails, through DISCOVERY_NAMESERVERS
    # (addresses, "host:port"; the system's when empty).
    discovery_interval: float = Field(default=5.0, gt=0, le=3600)
    discovery_nameservers: list[str] = Field(default_factory=list, max_length=8)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, environment, ``<NAME>_FILE``, ``.env``, ``AIOSHOP_SECRETS_DIR``."""
        dotenv = (
            dotenv_settings.env_vars if isinstance(dotenv_settings, DotEnvSettingsSource) else {}
        )
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            FileEnvSettingsSource(settings_cls, dotenv=dotenv),
            dotenv_settings,
        ]
        secrets_dir = _secrets_dir_source(settings_cls)
        if secrets_dir is not None:
            sources.append(secrets_dir)
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _private_key_follows_public_key(cls, data: Any) -> Any:
        # A real public key with the development private key left at its default would sign
        # tokens nobody accepts: a process given only a public key has no private key.
        if (
            isinstance(data, dict)
            and "jwt_public_key" in data
            and "jwt_private_key" not in data
            and not _using(data["jwt_public_key"], DEV_PUBLIC_KEY)
        ):
            return {**data, "jwt_private_key": None}
        return data

    @model_validator(mode="after")
    def _no_dev_keys_where_they_are_unsafe(self) -> BaseServiceSettings:
        dev_keys = _using(self.jwt_public_key, DEV_PUBLIC_KEY) or _using(
            self.jwt_private_key, DEV_PRIVATE_KEY
        )
        if not dev_keys:
            return self
        if self.env == "production":
            raise ValueError(
                f"AIOSHOP_ENV=production refuses the public development JWT key pair: {_KEY_HELP}"
            )
        explicit_development = self.env == "development" and "env" in self.model_fields_set
        if not is_loopback(self.host) and not explicit_development:
            raise ValueError(
                f"refusing the public development JWT key pair on host {self.host!r} (not a "
                f"loopback address): {_KEY_HELP}; or, on a development machine only, set "
                "AIOSHOP_ENV=development explicitly"
            )
        if self.env == "development":
            _warn_development_keys()
        return self
