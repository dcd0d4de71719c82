"""Shared pydantic building blocks: strict input models, problem details, pages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "InputModel",
    "OutputModel",
    "Page",
    "Problem",
    "ValidationErrorItem",
    "ValidationProblem",
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


class InputModel(BaseModel):
    """Base of request bodies: unknown fields are an error, strings are stripped and may not
    contain NUL. Numbers given as numeric strings are accepted (pydantic's lax mode)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return reject_nul(value)


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
