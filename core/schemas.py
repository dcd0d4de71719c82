"""Shared pydantic building blocks: strict input models, problem details, pages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "InputModel",
    "OutputModel",
    "Page",
    "Problem",
    "ValidationErrorItem",
    "ValidationProblem",
    "dump_errors",
]

T = TypeVar("T")


class InputModel(BaseModel):
    """Base of request bodies: unknown fields are an error, strings are stripped, no coercion
    of strings into numbers or booleans."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=False)


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
