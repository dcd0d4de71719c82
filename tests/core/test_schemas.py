"""core.schemas: every text of an input is NFC-normalized and free of control characters."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from core.schemas import InputModel, MultiLine, clean_text

pytestmark = pytest.mark.unit

DECOMPOSED = "Cafe\u0301"  # "Café" as e + combining acute accent
COMPOSED = "Caf\u00e9"


class Line(InputModel):
    note: str
    comment: Annotated[str, MultiLine()] = ""


class Form(InputModel):
    name: str
    description: Annotated[str, MultiLine(), StringConstraints(max_length=50)] = ""
    summary: Annotated[str, MultiLine()] | None = None
    tags: list[str] = []
    attributes: dict[str, Any] = {}
    lines: list[Line] = []
    line: Line | None = None


def _errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        Form.model_validate(data)
    return [
        {"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]}
        for e in caught.value.errors(include_url=False)
    ]


@pytest.mark.parametrize(
    "char",
    [
        *("\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\r", "\n", "\t"),
        # Line and paragraph separators, and the bidirectional overrides and isolates that
        # reorder what a reader sees ("Trojan Source").
        *("\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069"),
    ],
)
def test_a_single_line_field_refuses_control_characters(char: str) -> None:
    (error,) = _errors({"name": f"ab{char}c"})
    assert error["loc"] == ["name"]
    assert error["type"] == "string_control_character"
    assert f"U+{ord(char):04X}" in error["msg"]
    assert "position 2" in error["msg"]


def test_other_scripts_emoji_and_joiners_are_text() -> None:
    text = "עברית \u200f\u0627\u0644\u0639\u0631\u0628\u064a\u0629 👩\u200d💻 e\u0301"
    assert Form.model_validate({"name": text}).name == unicodedata.normalize("NFC", text)


def test_nul_keeps_its_own_error() -> None:
    (error,) = _errors({"name": "a\x00"})
    assert error["type"] == "string_nul"


def test_a_multi_line_field_takes_newlines_and_tabs_only() -> None:
    form = Form.model_validate({"name": "n", "description": "one\n\ttwo", "summary": "a\nb"})
    assert form.description == "one\n\ttwo"
    assert form.summary == "a\nb"
    for bad in ("a\rb", "a\x0bb", "a\x0cb", "a\x1bb", "a\x85b"):
        (error,) = _errors({"name": "n", "description": bad})
        assert error["loc"] == ["description"]
        assert error["type"] == "string_control_character"
    (error,) = _errors({"name": "n", "summary": "a\rb"})
    assert error["loc"] == ["summary"]


def test_lists_dict_keys_and_values_and_nested_models_are_checked() -> None:
    cases: list[tuple[dict[str, Any], list[str | int], str]] = [
        ({"tags": ["ok", "b\x07d"]}, ["tags"], "[1]"),
        ({"attributes": {"k\x1f": 1}}, ["attributes"], ""),
        ({"attributes": {"size": {"unit": ["cm\x9b"]}}}, ["attributes"], "['size']['unit'][0]"),
        ({"lines": [{"note": "fine"}, {"note": "bad\x08"}]}, ["lines", 1, "note"], ""),
        ({"line": {"note": "x", "comment": "a\x1b"}}, ["line", "comment"], ""),
    ]
    for data, loc, where in cases:
        (error,) = _errors({"name": "n", **data})
        assert error["loc"] == loc, data
        assert error["type"] == "string_control_character"
        assert where in error["msg"]
    # A nested model keeps its own multi-line rules.
    line = Form.model_validate({"name": "n", "line": {"note": "x", "comment": "a\nb"}}).line
    assert line is not None
    assert line.comment == "a\nb"


def test_every_text_is_stored_nfc_normalized() -> None:
    form = Form.model_validate(
        {
            "name": DECOMPOSED,
            "description": DECOMPOSED,
            "tags": [DECOMPOSED],
            "attributes": {DECOMPOSED: {"nested": [DECOMPOSED]}},
            "lines": [{"note": DECOMPOSED}],
        }
    )
    assert form.name == form.description == form.tags[0] == COMPOSED
    assert form.attributes == {COMPOSED: {"nested": [COMPOSED]}}
    assert form.lines[0].note == COMPOSED
    assert unicodedata.is_normalized("NFC", form.name)


def test_length_limits_apply_to_the_normalized_text() -> None:
    # 50 decomposed pairs are 100 code points but 50 once composed: within max_length=50.
    form = Form.model_validate({"name": "n", "description": "e\u0301" * 50})
    assert form.description == "\u00e9" * 50


def test_clean_text_leaves_other_values_alone() -> None:
    assert clean_text(5) == 5
    assert clean_text(None) is None
    assert clean_text(("a", DECOMPOSED)) == ("a", COMPOSED)
    assert clean_text("x\ty", multiline=True) == "x\ty"


def test_the_json_schema_publishes_the_same_rules() -> None:
    properties = Form.model_json_schema()["properties"]
    single, multi = properties["name"]["pattern"], properties["description"]["pattern"]
    assert properties["tags"]["items"]["pattern"] == single
    assert any(sub.get("pattern") == multi for sub in properties["summary"]["anyOf"])
    for text in ("plain", "Caf\u00e9", "a\nb", "a\tb", "a\rb", "a\x1bb", "a\x85b", "a\x00b"):
        for pattern, multiline in ((single, False), (multi, True)):
            try:
                clean_text(text, multiline=multiline)
            except PydanticCustomError:
                accepted = False
            else:
                accepted = True
            assert (re.search(pattern, text) is not None) == accepted, (text, multiline)
