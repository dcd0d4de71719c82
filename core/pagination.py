"""Opaque keyset cursors: the sort key of the last item of a page, encoded for the client."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from pydantic import Field

from core.errors import ValidationFailed
from core.handlers import Query

__all__ = ["Cursor", "InvalidCursor", "Limit", "decode_cursor", "encode_cursor"]

# The query parameters of every list (API.md "Conventions"): ``?limit=`` 1..100, default 20 at
# the handler, and the opaque ``?cursor=`` of the previous page's ``next_cursor``.
Limit = Annotated[int, Query(description="Page size"), Field(ge=1, le=100)]
Cursor = Annotated[
    str | None, Query(description="Opaque cursor from next_cursor"), Field(max_length=512)
]


class InvalidCursor(ValidationFailed):
    """A cursor that this API did not issue (422 on ``query.cursor``)."""

    def __init__(self) -> None:
        super().__init__(
            [
                {
                    "loc": ["query", "cursor"],
                    "msg": "The cursor is not valid",
                    "type": "cursor_invalid",
                }
            ]
        )


def encode_cursor(*values: Any) -> str:
    """Encode the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """Decode a cursor holding ``size`` values, or raise a 422 on ``query.cursor``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidCursor()
    return values
