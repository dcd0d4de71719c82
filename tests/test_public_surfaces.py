"""Public surfaces of every package: a module's ``__all__`` names what it defines for others,
and only things that exist (as httpx checks its own)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import core
import gateway
import services
import web

pytestmark = pytest.mark.unit

PACKAGES = (core, gateway, services, web)


def _modules(*packages: types.ModuleType) -> list[str]:
    return sorted(
        info.name
        for package in packages
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
        if not info.name.endswith(".__main__")
    )


MODULES = _modules(*PACKAGES)
# Services' handler modules define route functions that only their router needs: the rule
# below is for the packages others build on.
LIBRARY_MODULES = _modules(core, gateway, web)


@pytest.mark.parametrize("name", [p.__name__ for p in PACKAGES] + MODULES)
def test_every_name_in_all_exists_and_is_not_a_module(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", ())
    assert [n for n in exported if not hasattr(module, n)] == []
    assert [n for n in exported if isinstance(getattr(module, n), types.ModuleType)] == []


@pytest.mark.parametrize("name", LIBRARY_MODULES)
def test_public_classes_and_functions_defined_in_a_module_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and "[" not in attr  # Page[Item]: pydantic files a parametrized model where it is made
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    assert defined - set(getattr(module, "__all__", ())) == set()


def test_the_gateway_and_the_dashboard_export_their_entry_points() -> None:
    assert sorted(gateway.__all__) == ["Settings", "create_gateway_app", "run_gateway"]
    assert {"Settings", "create_web_app"} <= set(web.__all__)
