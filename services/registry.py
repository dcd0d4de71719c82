"""The services aioshop runs: their names, default ports, settings and app factories; and every
role ``aioshop serve`` runs (the services, the gateway, the dashboard)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from core.settings import BaseServiceSettings

__all__ = ["FRONTS", "ROLES", "SERVICES", "ServiceEntry", "get"]


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """How to build and run one service."""

    name: str
    module: str  # package exposing ``Settings`` and ``create_<name>_app``
    migrated: bool = True

    def settings(self, **overrides: Any) -> BaseServiceSettings:
        """The service's settings from the environment, with ``overrides``."""
        settings_cls: type[BaseServiceSettings] = importlib.import_module(self.module).Settings
        return settings_cls(**overrides)

    def app_factory(self) -> Callable[..., web.Application]:
        """The service's ``create_<name>_app(settings, *, transport=None)``."""
        factory: Callable[..., web.Application] = getattr(
            importlib.import_module(self.module), f"create_{self.name}_app"
        )
        return factory


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry("users", "services.users"),
        ServiceEntry("products", "services.products"),
        ServiceEntry("orders", "services.orders"),
    )
}


# The processes in front of the services: run by ``aioshop serve`` from their own packages.
FRONTS: tuple[str, ...] = ("gateway", "web")
ROLES: tuple[str, ...] = (*SERVICES, *FRONTS)


def get(name: str) -> ServiceEntry:
    """The entry of service ``name`` (``KeyError`` if there is none)."""
    return SERVICES[name]
