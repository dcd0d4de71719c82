"""The codebase keeps its shape: small modules, and each event declared by its publisher's
``events`` module (the import contracts in ``.importlinter`` check the rest)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from core.bus import Event

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "services", "gateway", "web")
MAX_LINES = 500


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def _subclasses(cls: type[Event]) -> list[type[Event]]:
    found: list[type[Event]] = []
    for sub in cls.__subclasses__():
        found.extend([sub, *_subclasses(sub)])
    return found


def test_no_source_module_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert len(sizes) > 100
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_event_type_is_declared_in_its_publishers_events_module() -> None:
    for name in _modules():
        importlib.import_module(name)
    declared = [
        cls
        for cls in _subclasses(Event)
        if "event_type" in cls.__dict__ and cls.__module__.split(".")[0] in PACKAGES
    ]
    assert {cls.event_type for cls in declared} >= {"order.placed", "inventory.reserved"}
    outside = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in declared
        if cls.__module__.rsplit(".", 1)[-1] != "events"
    }
    assert outside == set()


def test_each_event_type_and_version_is_declared_once() -> None:
    for name in _modules():
        importlib.import_module(name)
    seen: dict[tuple[str, int], str] = {}
    twice: list[str] = []
    for cls in _subclasses(Event):
        if "event_type" not in cls.__dict__ or cls.__module__.split(".")[0] not in PACKAGES:
            continue
        key = (cls.event_type, cls.event_version)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if key in seen and seen[key] != where:
            twice.append(f"{key}: {seen[key]} and {where}")
        seen[key] = where
    assert twice == []
