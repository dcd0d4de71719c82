"""core.settings: safe defaults, no development key where it can be reached, values from
files (``<NAME>_FILE``, ``AIOSHOP_SECRETS_DIR``), and one clear line when settings are invalid."""

import logging
import os
from pathlib import Path

import pytest
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import SettingsError

from core.auth.devkeys import DEV_PRIVATE_KEY, DEV_PUBLIC_KEY
from core.auth.keygen import generate_key_pair
from core.settings import (
    SECRETS_DIR_VAR,
    BaseServiceSettings,
    _warn_development_keys,
    database_url,
    describe_settings_error,
    load_settings,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ANY_HOST = "0.0.0.0"  # noqa: S104 (every interface: what the tests refuse)


def test_production_refuses_the_development_key_pair() -> None:
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY"):
        BaseServiceSettings(_env_file=None, env="production")  # type: ignore[call-arg]


def test_the_environment_is_read_from_aioshop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOSHOP_ENV", "production")
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY"):
        BaseServiceSettings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("AIOSHOP_ENV", "test")
    assert BaseServiceSettings(_env_file=None).env == "test"  # type: ignore[call-arg]


def test_defaults_point_at_local_servers() -> None:
    settings = BaseServiceSettings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.jwt_public_key == DEV_PUBLIC_KEY
    assert settings.cors_origins == []
    assert database_url("users") == "postgresql://postgres@127.0.0.1:5432/users"


@pytest.mark.parametrize("namespace", ["", "has space", "a/b", "x" * 65, "new\nline"])
def test_a_redis_namespace_is_a_safe_key_prefix(namespace: str) -> None:
    with pytest.raises(ValidationError):
        BaseServiceSettings(_env_file=None, env="test", redis_namespace=namespace)  # type: ignore[call-arg]


def test_settings_are_frozen() -> None:
    settings = BaseServiceSettings(_env_file=None, env="test")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        settings.max_body_bytes = 1  # type: ignore[misc]


# --- the development key pair is only trusted where it cannot be reached ---------------------

REAL_PRIVATE, REAL_PUBLIC = generate_key_pair()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the runner's own AIOSHOP_*/JWT_*/*_URL variables would interfere."""
    for variable in list(os.environ):
        if variable.startswith(("AIOSHOP", "JWT_", "REDIS_", "AMQP_", "USERS_", "CORS_")):
            monkeypatch.delenv(variable)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_hosts_keep_the_development_keys(host: str) -> None:
    settings = BaseServiceSettings(_env_file=None, host=host)  # type: ignore[call-arg]
    assert settings.env == "development"
    assert settings.jwt_public_key == DEV_PUBLIC_KEY
    assert settings.jwt_private_key is not None


@pytest.mark.parametrize(
    "host", [ANY_HOST, "::", "", "10.1.2.3", "192.168.0.7", "shop.example.com", "127.0.0.1.nip.io"]
)
@pytest.mark.parametrize("env", [None, "test"])
def test_a_reachable_host_refuses_the_development_keys(host: str, env: str | None) -> None:
    given = {} if env is None else {"env": env}
    with pytest.raises(ValidationError) as caught:
        BaseServiceSettings(_env_file=None, host=host, **given)  # type: ignore[call-arg]
    message = str(caught.value)
    assert "not a loopback address" in message
    for hint in ("JWT_PUBLIC_KEY_FILE", "JWT_PRIVATE_KEY_FILE", "aioshop keygen"):
        assert hint in message


def test_an_explicit_development_environment_allows_them_on_any_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert BaseServiceSettings(_env_file=None, host=ANY_HOST, env="development").host  # type: ignore[call-arg]
    monkeypatch.setenv("AIOSHOP_ENV", "development")
    assert BaseServiceSettings(_env_file=None, host=ANY_HOST).env == "development"  # type: ignore[call-arg]


def test_production_refuses_them_even_on_loopback() -> None:
    with pytest.raises(ValidationError, match="AIOSHOP_ENV=production"):
        BaseServiceSettings(_env_file=None, env="production", host="127.0.0.1")  # type: ignore[call-arg]


def test_real_keys_run_anywhere_and_a_public_key_alone_signs_nothing() -> None:
    signer = BaseServiceSettings(  # type: ignore[call-arg]
        _env_file=None,
        env="production",
        host=ANY_HOST,
        jwt_public_key=REAL_PUBLIC,
        jwt_private_key=REAL_PRIVATE,
    )
    assert signer.jwt_private_key is not None
    assert signer.jwt_private_key.get_secret_value() == REAL_PRIVATE
    verifier = BaseServiceSettings(  # type: ignore[call-arg]
        _env_file=None, env="production", host=ANY_HOST, jwt_public_key=REAL_PUBLIC
    )
    assert verifier.jwt_private_key is None  # not the development private key


def test_the_development_private_key_is_refused_beside_a_real_public_key() -> None:
    with pytest.raises(ValidationError) as caught:
        BaseServiceSettings(  # type: ignore[call-arg]
            _env_file=None,
            env="production",
            jwt_public_key=REAL_PUBLIC,
            jwt_private_key=DEV_PRIVATE_KEY,
        )
    assert "AIOSHOP_ENV=production" in str(caught.value)


def test_the_development_key_warning_is_logged_once_per_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _warn_development_keys.cache_clear()
    with caplog.at_level(logging.WARNING, logger="core.settings"):
        for _ in range(3):
            BaseServiceSettings(_env_file=None)  # type: ignore[call-arg]
        BaseServiceSettings(_env_file=None, env="test")  # type: ignore[call-arg]
    warnings = [r for r in caplog.records if "development JWT key pair" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


# --- every value can come from a file ---------------------------------------------------------


class _AliasedSettings(BaseServiceSettings):
    database_url: str = Field(
        default="postgresql://localhost/x",
        validation_alias=AliasChoices("USERS_DATABASE_URL", "database_url"),
    )
    admin_password: SecretStr | None = None


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_name_file_reads_the_value_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", _write(tmp_path / "public.pem", REAL_PUBLIC))
    monkeypatch.setenv("JWT_PRIVATE_KEY_FILE", _write(tmp_path / "private.pem", REAL_PRIVATE))
    monkeypatch.setenv("REDIS_URL_FILE", _write(tmp_path / "redis", "redis://:pw@r:6379/0\n"))
    monkeypatch.setenv("AMQP_URL_FILE", _write(tmp_path / "amqp", "amqp://u:p@q:5672/\r\n"))
    monkeypatch.setenv("CORS_ORIGINS_FILE", _write(tmp_path / "cors", '["https://a.example"]'))
    monkeypatch.setenv("USERS_DATABASE_URL_FILE", _write(tmp_path / "db", "postgresql://u:p@h/d"))
    monkeypatch.setenv("admin_password_file", _write(tmp_path / "admin", " with spaces \n\n"))
    settings = _AliasedSettings(_env_file=None, env="production", host=ANY_HOST)  # type: ignore[call-arg]
    assert settings.jwt_public_key == REAL_PUBLIC.rstrip("\n")
    assert settings.jwt_private_key is not None
    assert settings.jwt_private_key.get_secret_value() == REAL_PRIVATE.rstrip("\n")
    assert settings.redis_url == "redis://:pw@r:6379/0"
    assert settings.amqp_url == "amqp://u:p@q:5672/"
    assert settings.cors_origins == ["https://a.example"]
    assert settings.database_url == "postgresql://u:p@h/d"
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == " with spaces "  # only newlines go


def test_name_file_works_from_the_dotenv_file_too(tmp_path: Path) -> None:
    key = _write(tmp_path / "public.pem", REAL_PUBLIC)
    dotenv = _write(tmp_path / ".env", f"JWT_PUBLIC_KEY_FILE={key}\nAIOSHOP_ENV=production\n")
    settings = BaseServiceSettings(_env_file=dotenv, host=ANY_HOST)  # type: ignore[call-arg]
    assert settings.jwt_public_key == REAL_PUBLIC.rstrip("\n")


@pytest.mark.parametrize(
    ("plain", "file"),
    [
        ("REDIS_URL", "REDIS_URL_FILE"),
        ("JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE"),
        ("USERS_DATABASE_URL", "DATABASE_URL_FILE"),  # two names of one field
    ],
)
def test_a_value_and_its_file_together_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain: str, file: str
) -> None:
    monkeypatch.setenv(plain, "inline-value")
    monkeypatch.setenv(file, _write(tmp_path / "value", "from-file"))
    with pytest.raises(SettingsError, match=f"{plain} and {file} are both set"):
        _AliasedSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("path", ["", "missing", "."])
def test_an_unreadable_file_is_an_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", str(tmp_path / path) if path else "")
    with pytest.raises(SettingsError, match="JWT_PUBLIC_KEY_FILE"):
        BaseServiceSettings(_env_file=None)  # type: ignore[call-arg]


def test_file_variables_of_no_field_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE_FILE", "/nonexistent")
    monkeypatch.setenv("NOT_A_SETTING_FILE", "/nonexistent")
    assert BaseServiceSettings(_env_file=None).port == 8000  # type: ignore[call-arg]


def test_a_secrets_directory_supplies_files_named_after_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "JWT_PUBLIC_KEY", REAL_PUBLIC)
    _write(tmp_path / "redis_url", "redis://:from-dir@r:6379/0\n")
    _write(tmp_path / "amqp_url", "amqp://from-dir/")
    monkeypatch.setenv(SECRETS_DIR_VAR, str(tmp_path))
    monkeypatch.setenv("AMQP_URL", "amqp://from-env/")  # the environment wins over the directory
    settings = BaseServiceSettings(_env_file=None, env="production", host=ANY_HOST)  # type: ignore[call-arg]
    assert settings.jwt_public_key == REAL_PUBLIC.strip()
    assert settings.jwt_private_key is None
    assert settings.redis_url == "redis://:from-dir@r:6379/0"
    assert settings.amqp_url == "amqp://from-env/"


def test_a_missing_secrets_directory_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRETS_DIR_VAR, str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match=SECRETS_DIR_VAR):
        BaseServiceSettings(_env_file=None)  # type: ignore[call-arg]


# --- invalid settings end a process with one line, never a value ------------------------------


def test_load_settings_exits_with_one_line_without_the_secrets() -> None:
    with pytest.raises(SystemExit) as caught:
        load_settings(
            BaseServiceSettings,
            _env_file=None,
            host=ANY_HOST,
            jwt_public_key=REAL_PUBLIC,
            jwt_private_key=DEV_PRIVATE_KEY,
        )
    message = str(caught.value.code)
    assert message.startswith("invalid settings: refusing the public development JWT key pair")
    assert "\n" not in message
    assert "PRIVATE KEY" not in message
    assert "MC4CAQAw" not in message

    with pytest.raises(SystemExit) as caught:
        load_settings(BaseServiceSettings, _env_file=None, port=-1, admin="ignored")
    assert str(caught.value.code) == (
        "invalid settings: PORT: Input should be greater than or equal to 0"
    )


def test_describe_settings_error_hides_the_input() -> None:
    with pytest.raises(ValidationError) as caught:
        BaseServiceSettings(  # type: ignore[call-arg]
            _env_file=None,
            env="production",
            jwt_public_key=REAL_PUBLIC,
            jwt_private_key=DEV_PRIVATE_KEY,
        )
    assert "MC4CAQAw" in str(caught.value.errors())  # pydantic's own errors hold the input...
    assert "MC4CAQAw" not in describe_settings_error(caught.value)  # ...ours does not


def test_bus_exchange_names_the_exchange_of_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.bus.app import make_transport
    from services.orders.app import transport_for
    from services.orders.settings import Settings as OrdersSettings

    monkeypatch.setenv("BUS_EXCHANGE", "bench.events")
    assert make_transport(BaseServiceSettings()).exchange == "bench.events"
    assert transport_for(OrdersSettings()).exchange == "bench.events"
    monkeypatch.setenv("ORDERS_BUS_EXCHANGE", "orders.own")
    assert transport_for(OrdersSettings()).exchange == "orders.own"
    monkeypatch.setenv("BUS_EXCHANGE", "bad exchange!")
    with pytest.raises(ValidationError, match="bus_exchange"):
        BaseServiceSettings()
