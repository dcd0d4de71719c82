"""core's public surface: ``__all__`` of the package is exactly its public names, and core's
modules take from each other only what is exported (the per-module rules for every package
are in ``tests/test_public_surfaces.py``)."""

import ast
import importlib
import importlib.util
import pkgutil
import types
from pathlib import Path

import pytest

import core
import core.auth

pytestmark = pytest.mark.unit

MODULES = sorted(info.name for info in pkgutil.walk_packages(core.__path__, prefix="core."))


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("package", [core, core.auth], ids=lambda m: m.__name__)
def test_all_is_exactly_the_public_names(package: types.ModuleType) -> None:
    assert len(package.__all__) == len(set(package.__all__)), "duplicates in __all__"
    assert set(package.__all__) == _public_names(package)


def test_core_exports_what_services_build_on() -> None:
    for name in (
        "create_app",
        "Router",
        "Path",
        "Query",
        "Header",
        "Body",
        "Principal",
        "ProblemError",
        "BaseServiceSettings",
        "redis_ctx",
        "postgres_ctx",
    ):
        assert name in core.__all__, name


@pytest.mark.parametrize("name", MODULES)
def test_core_modules_import_each_other_only_through_all(name: str) -> None:
    """A name one core module takes from another is part of that module's public surface."""
    module = importlib.import_module(name)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    private_uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core."):
            if importlib.util.find_spec(node.module) is None:
                continue  # a lazy import of a module not written yet
            source = importlib.import_module(node.module)
            exported = set(getattr(source, "__all__", _public_names(source)))
            for alias in node.names:
                value = getattr(source, alias.name, None)
                if alias.name not in exported and not isinstance(value, types.ModuleType):
                    private_uses.append(f"{node.module}.{alias.name}")
    assert private_uses == []
