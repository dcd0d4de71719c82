"""``core.openapi.InputJsonSchema``: the published input schema is no looser than validation.

For each rule pydantic validates but did not emit (control characters, blank stripped strings,
keys outside ``patternProperties``), a value the emitted schema allows must validate, and a
value validation refuses must be refused by the schema too. Checked with ``jsonschema`` against
the emitted document, and with pydantic against the model: no running service is needed.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from pydantic import StringConstraints, ValidationError

from core.openapi import _Components
from core.schemas import InputModel, MultiLine

Name = Annotated[str, StringConstraints(min_length=1, max_length=50)]
Key = Annotated[str, StringConstraints(pattern=r"^[a-z]{1,10}$")]


class Sample(InputModel):
    """A body of every kind of text field."""

    name: Name
    note: Annotated[str, MultiLine(), StringConstraints(max_length=100)] = ""
    secret: Annotated[str, StringConstraints(min_length=1, strip_whitespace=False)] = "x"
    tags: dict[Key, Name] = {}
    optional: Name | None = None


def _validator() -> tuple[Draft202012Validator, dict[str, Any]]:
    components = _Components()
    ref = components.schema(Sample, "input")
    document = {"$defs": components.schemas, **ref}
    text = json.dumps(document).replace("#/components/schemas/", "#/$defs/")
    resolved: dict[str, Any] = json.loads(text)
    return Draft202012Validator(resolved), components.schemas["Sample"]


def _pydantic_accepts(body: dict[str, Any]) -> bool:
    try:
        Sample.model_validate(body)
    except ValidationError:
        return False
    return True


CASES: list[dict[str, Any]] = [
    {"name": "plain"},
    {"name": "tab\there"},
    {"name": "nul\x00"},
    {"name": "c1\x85"},
    {"name": "   "},
    {"name": " padded "},
    {"name": "ok", "note": "two\nlines\tand a tab"},
    {"name": "ok", "note": "bell\x07"},
    {"name": "ok", "note": "cr\r"},
    {"name": "ok", "secret": " "},
    {"name": "ok", "secret": "\x01"},
    {"name": "ok", "tags": {"good": "value"}},
    {"name": "ok", "tags": {"Bad Key": "value"}},
    {"name": "ok", "tags": {"good": "bad\x02"}},
    {"name": "ok", "optional": "line\nbreak"},
    {"name": "ok", "optional": None},
]


@pytest.mark.parametrize("body", CASES, ids=lambda b: repr(b)[:40])
def test_the_schema_agrees_with_validation(body: dict[str, Any]) -> None:
    validator, _ = _validator()
    schema_accepts = validator.is_valid(body)
    assert schema_accepts == _pydantic_accepts(body), (body, list(validator.iter_errors(body)))


def test_patterns_are_valid_ecma_regexes_and_multiline_only_where_marked() -> None:
    _, schema = _validator()
    properties = schema["properties"]
    for name in ("name", "note", "secret"):
        re.compile(properties[name]["pattern"])
    assert properties["name"]["pattern"] != properties["note"]["pattern"]
    assert "\\s" in properties["name"]["pattern"]  # stripped, not empty: not blank
    assert "\\s" not in properties["secret"]["pattern"]  # not stripped: blank is fine
    assert properties["tags"]["additionalProperties"] is False
