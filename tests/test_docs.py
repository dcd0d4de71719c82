"""The repository documents itself: its links lead to its own files, every bus event is in
docs/events.md and every route of every service is in docs/api.md."""

from __future__ import annotations

import importlib
import inspect
import re
import unicodedata
from pathlib import Path
from types import ModuleType

import pytest

from core.bus import Event
from core.handlers import Router
from services import registry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")],
    key=lambda p: str(p),
)
EVENTS_MD = ROOT / "docs" / "events.md"
API_MD = ROOT / "docs" / "api.md"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...
# Where the project's first documents lived, outside the repository, and machine paths.
OUTSIDE = re.compile(r"\.\./shared\b|shared/(?:DESIGN|API)\.md|/work/")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text without fenced code blocks (links are not links there)."""
    return FENCE.sub("", text)


def _links(text: str) -> list[str]:
    prose = CODE_SPAN.sub("", _prose(text))
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = unicodedata.normalize("NFKC", text).lower().replace("`", "")
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_documents_exist() -> None:
    for name in ("architecture.md", "api.md", "events.md", "security.md"):
        assert (ROOT / "docs" / name).is_file(), name
    assert (ROOT / "CONTRIBUTING.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=_relative)
def test_every_relative_link_leads_to_a_file_of_the_repository(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {_relative(resolved)}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=_relative)
def test_nothing_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert [m.group(0) for m in OUTSIDE.finditer(text)] == []


def _event_modules() -> list[ModuleType]:
    names = sorted(f"services.{p.parent.name}.events" for p in ROOT.glob("services/*/events.py"))
    assert {"services.users.events", "services.products.events", "services.orders.events"} <= set(
        names
    )
    return [importlib.import_module(name) for name in names]


def _declared_events() -> dict[str, str]:
    """Event type -> the class declaring it, for every event class a service's ``events``
    module declares itself (a class it only re-exports counts where it is declared)."""
    declared: dict[str, str] = {}
    for module in _event_modules():
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and issubclass(cls, Event)
                and cls.__module__ == module.__name__
                and "event_type" in cls.__dict__
            ):
                declared[cls.event_type] = f"{cls.__module__}.{cls.__qualname__}"
    return declared


def test_every_event_of_every_service_is_in_events_md() -> None:
    declared = _declared_events()
    assert len(declared) >= 17  # the contract's events, metrics.snapshot aside
    text = EVENTS_MD.read_text(encoding="utf-8")
    missing = sorted(
        f"{event_type} ({where})"
        for event_type, where in declared.items()
        if f"`{event_type}`" not in text
    )
    assert missing == [], "docs/events.md does not describe these events"


_PARAM = re.compile(r"\{[^}]*\}")
_ROW = re.compile(r"^\|\s*([A-Z, ]+?)\s*\|\s*(/[^\s|?]*)[^|]*\|", re.M)


def _normalized(path: str) -> str:
    return _PARAM.sub("{}", path)


def _documented_routes() -> set[tuple[str, str]]:
    """(method, path) of every row of a route table in docs/api.md (``{id}`` matches any
    path parameter)."""
    routes = set()
    for methods, path in _ROW.findall(API_MD.read_text(encoding="utf-8")):
        for method in methods.split(","):
            routes.add((method.strip(), _normalized(path)))
    return routes


def _service_routes() -> dict[tuple[str, str], str]:
    routes: dict[tuple[str, str], str] = {}
    for name, entry in registry.SERVICES.items():
        router = importlib.import_module(f"{entry.module}.api").router
        assert isinstance(router, Router)
        for route in router.routes:
            routes[(route.method, _normalized(route.path))] = f"{name}: {route.path}"
    return routes


def test_every_route_of_every_service_is_in_api_md() -> None:
    declared = _service_routes()
    assert len(declared) >= 20
    documented = _documented_routes()
    missing = sorted(
        f"{method} {where}"
        for (method, path), where in declared.items()
        if (method, path) not in documented
    )
    assert missing == [], "docs/api.md does not name these routes"
