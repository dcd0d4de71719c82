"""The gateway's public surface: each module's ``__all__`` is exactly what it defines for others."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import gateway

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(gateway.__path__, prefix="gateway.")
    if info.name != "gateway.__main__"
)


def test_the_package_exports_the_entry_points() -> None:
    assert sorted(gateway.__all__) == ["Settings", "create_gateway_app", "run_gateway"]


@pytest.mark.parametrize("name", MODULES)
def test_public_classes_and_functions_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    exported = set(getattr(module, "__all__", ()))
    assert defined - exported == set()
    assert [n for n in exported if not hasattr(module, n)] == []
    assert not any(isinstance(getattr(module, n), types.ModuleType) for n in exported)
