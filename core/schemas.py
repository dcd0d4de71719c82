"""Shared pydantic building blocks: strict input models, problem details, pages.

Text of every input (``InputModel`` fields, and query/header parameters through
``core.handlers``) goes through ``clean_text``: NUL is refused (PostgreSQL cannot store it), so is
every other control character (Unicode ``Cc``: C0, DEL and C1), except newline and tab in fields
marked ``MultiLine()`` (a description); then the text is NFC-normalized, so that one visible
string has one stored form (and one password one hash, as NIST SP 800-63B asks). This reaches
strings inside lists and dicts (keys too) of a field; a nested ``InputModel`` checks its own.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Any, Generic, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "FORBIDDEN",
    "FORBIDDEN_MULTILINE",
    "InputModel",
    "MultiLine",
    "OutputModel",
    "Page",
    "Problem",
    "ValidationErrorItem",
    "ValidationProblem",
    "clean_field",
    "clean_text",
    "dump_errors",
    "reject_nul",
]

T = TypeVar("T")


def reject_nul(value: Any) -> Any:
    """Refuse NUL characters anywhere in a value: PostgreSQL cannot store them in text or jsonb."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError("string_nul", "NUL characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key)
            reject_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            reject_nul(item)
    return value


class MultiLine:
    """Marks a text field that may hold newlines and tabs: ``Annotated[str, MultiLine()]``."""

    def __repr__(self) -> str:
        return "MultiLine()"


# What no input string may hold, as a character class that Python's ``re`` and ECMA-262 (the JSON
# Schema patterns) read alike: the C0 and C1 controls and DEL, the line and paragraph separators,
# and the bidirectional embeddings, overrides and isolates ("Trojan Source" reordering).
_FORMAT = "\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
FORBIDDEN = f"\\u0000-\\u001f\\u007f-\\u009f{_FORMAT}"
# ``MultiLine()`` fields: newline and tab allowed.
FORBIDDEN_MULTILINE = f"\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f{_FORMAT}"
_CONTROL = re.compile(f"[{FORBIDDEN}]")
_CONTROL_MULTILINE = re.compile(f"[{FORBIDDEN_MULTILINE}]")


def _where(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{part if isinstance(part, int) else repr(part[:40])}]" for part in path)


def _clean(value: Any, pattern: re.Pattern[str], path: tuple[str | int, ...]) -> Any:
    if isinstance(value, str):
        found = pattern.search(value)
        if found is not None:
            char = found.group()
            where = f" (in {_where(path)})" if path else ""
            if char == "\x00":
                raise PydanticCustomError("string_nul", "NUL characters are not allowed" + where)
            raise PydanticCustomError(
                "string_control_character",
                "control character U+{code} at position {position} is not allowed{where}",
                {"code": f"{ord(char):04X}", "position": found.start(), "where": where},
            )
        return unicodedata.normalize("NFC", value)
    if isinstance(value, dict):
        cleaned: dict[Any, Any] = {}
        for key, item in value.items():
            clean_key = _clean(key, pattern, path)
            cleaned[clean_key] = _clean(item, pattern, (*path, clean_key))
        return cleaned
    if isinstance(value, list | tuple):
        items = [_clean(item, pattern, (*path, i)) for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


def clean_text(value: Any, *, multiline: bool = False) -> Any:
    """``value`` with every string in it NFC-normalized; a control character is an error.

    Walks lists, tuples and dicts (keys and values). ``multiline`` allows ``\\n`` and ``\\t``.
    Raises ``PydanticCustomError`` (``string_nul`` or ``string_control_character``).
    """
    return _clean(value, _CONTROL_MULTILINE if multiline else _CONTROL, ())


def _mentions(annotation: Any, seen: set[int]) -> tuple[bool, bool]:
    """Whether a type mentions ``MultiLine`` metadata, and whether it mentions a model."""
    if id(annotation) in seen:
        return False, False
    seen.add(id(annotation))
    if isinstance(annotation, MultiLine):
        return True, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return False, True
    value = getattr(annotation, "__value__", None)  # a ``type X = ...`` alias
    parts = [*get_args(annotation), *getattr(annotation, "__metadata__", ())]
    if value is not None:
        parts.append(value)
    multiline = has_model = False
    for part in parts:
        part_multiline, part_model = _mentions(part, seen)
        multiline, has_model = multiline or part_multiline, has_model or part_model
    return multiline, has_model


@cache
def _text_rules(model: type[BaseModel], name: str) -> tuple[bool, bool]:
    field = model.model_fields.get(name)
    if field is None:
        return False, False
    seen: set[int] = set()
    multiline, has_model = _mentions(field.annotation, seen)
    for item in field.metadata:
        item_multiline, item_model = _mentions(item, seen)
        multiline, has_model = multiline or item_multiline, has_model or item_model
    return multiline, has_model


def clean_field(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``clean_text`` for one field of ``model``: multi-line if it is marked ``MultiLine()``.

    The raw value of a field typed with a nested model is left to that model's own validation
    (only a plain string is checked here), so its fields keep their own rules.
    """
    multiline, has_model = _text_rules(model, info.field_name or "")
    if has_model and not isinstance(value, str):
        return value
    return clean_text(value, multiline=multiline)


# The same rules, published in the JSON Schema of every free-text field of an input.
_TEXT_PATTERN = f"^[^{FORBIDDEN}]*$"
_MULTILINE_PATTERN = f"^[^{FORBIDDEN_MULTILINE}]*$"


def _add_pattern(node: Any, pattern: str, *, text: bool = False) -> None:
    if not isinstance(node, dict):
        return
    is_text = text or node.get("type") == "string"
    if is_text and not node.keys() & {"pattern", "format", "enum", "const", "$ref"}:
        node["pattern"] = pattern
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in node.get(key, []):
            _add_pattern(sub, pattern)
    for sub in node.get("patternProperties", {}).values():
        _add_pattern(sub, pattern)
    _add_pattern(node.get("items"), pattern)
    _add_pattern(node.get("additionalProperties"), pattern)
    _add_pattern(node.get("propertyNames"), pattern, text=True)  # keys are strings


def _publish_text_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    names = {field.alias or name: name for name, field in model.model_fields.items()}
    for wire, prop in schema.get("properties", {}).items():
        multiline, _ = _text_rules(model, names.get(wire, wire))
        _add_pattern(prop, _MULTILINE_PATTERN if multiline else _TEXT_PATTERN)


class InputModel(BaseModel):
    """Base of request bodies: unknown fields are an error, strings are stripped, NFC-normalized
    and may not contain control characters (see the module docstring; ``MultiLine()`` allows
    newlines and tabs). Numbers given as numeric strings are accepted (pydantic's lax mode).
    The JSON Schema of a free-text field says so with a ``pattern``."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        strict=False,
        json_schema_extra=_publish_text_rules,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> Any:
        return clean_field(cls, value, info)


class OutputModel(BaseModel):
    """Base of response bodies; built from objects or mappings."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A keyset-paginated list: pass ``next_cursor`` back as ``?cursor=`` for the next page."""

    items: list[T]
    next_cursor: str | None = None


class ValidationErrorItem(BaseModel):
    """One input that failed validation."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    correlation_id: str | None = None


class ValidationProblem(Problem):
    """A 422 problem with the list of failures."""

    errors: list[ValidationErrorItem] = Field(default_factory=list)


def dump_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors reduced to ``{loc, msg, type}``: never the input (it may be a password)."""
    return [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in e["loc"]],
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in errors
    ]
