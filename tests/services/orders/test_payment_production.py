"""The simulated payment provider (tok_visa pays for anything) never serves in production
unless ORDERS_ALLOW_SIMULATED_PAYMENTS=true."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

import core.runner
from core.auth.keygen import generate_key_pair
from services import cli
from services.orders import Settings, create_orders_app
from services.orders.payment import PaymentProvider, SimulatedPaymentProvider


def _production(orders_settings: Settings, **overrides: Any) -> Settings:
    private, public = generate_key_pair()
    values = orders_settings.model_dump()
    values.update(env="production", jwt_private_key=private, jwt_public_key=public, **overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_production_refuses_to_start_with_the_simulated_provider(
    orders_settings: Settings,
) -> None:
    with pytest.raises(ValidationError, match="ORDERS_ALLOW_SIMULATED_PAYMENTS=true"):
        create_orders_app(_production(orders_settings))


def test_an_explicit_allowance_another_provider_or_environment_starts(
    orders_settings: Settings,
) -> None:
    allowed = _production(orders_settings, allow_simulated_payments=True)
    create_orders_app(allowed)
    provider: PaymentProvider = SimulatedPaymentProvider(pool=None)  # type: ignore[arg-type]
    create_orders_app(_production(orders_settings), payment=provider)  # a real one, say
    assert orders_settings.allow_simulated_payments is False
    create_orders_app(orders_settings)  # env "test"


def test_serve_says_why_in_one_line_and_never_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the service started")

    monkeypatch.setattr(core.runner, "run", started)
    monkeypatch.setattr("services.cli.serve.configure_logging", lambda *args, **kwargs: None)
    private, public = generate_key_pair()
    monkeypatch.setenv("AIOSHOP_ENV", "production")
    monkeypatch.setenv("JWT_PRIVATE_KEY", private)
    monkeypatch.setenv("JWT_PUBLIC_KEY", public)
    monkeypatch.delenv("ORDERS_ALLOW_SIMULATED_PAYMENTS", raising=False)

    assert cli.main(["serve", "orders"]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "simulated payment provider" in error
    assert "ORDERS_ALLOW_SIMULATED_PAYMENTS=true" in error

    monkeypatch.setenv("ORDERS_ALLOW_SIMULATED_PAYMENTS", "true")
    with pytest.raises(AssertionError, match="the service started"):
        cli.main(["serve", "orders"])
