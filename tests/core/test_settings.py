"""core.settings: safe defaults, and no development key in production."""

import pytest
from pydantic import ValidationError

from core.auth.devkeys import DEV_PUBLIC_KEY
from core.settings import BaseServiceSettings, database_url


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
