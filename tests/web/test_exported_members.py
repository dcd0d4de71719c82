"""The dashboard's public surface: what each module defines publicly is in its ``__all__``."""

import importlib
import inspect
import pkgutil

import pytest

import web

MODULES = sorted(info.name for info in pkgutil.walk_packages(web.__path__, prefix="web."))


@pytest.mark.parametrize("name", ["web", *MODULES])
def test_public_classes_and_functions_are_exported_and_exist(name: str) -> None:
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
