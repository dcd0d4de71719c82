"""The cache's wire format: a small binary header and a JSON payload. Never pickle.

A record is what every tier stores for one key::

    magic "\\x93ac1" | created f64 | expires f64 | delta f64 | kind u8 | n u16
    | n stamps i64 | payload

``created`` is the wall-clock time the value's computation started, ``expires`` the time it stops
being fresh, ``delta`` how long the computation took (for early refresh). ``stamps`` are the
invalidation versions of the record's key and tags when the computation started (see
``core.cache.cache``); ``n == 0xFFFF`` means the record was written while they were unknown.
``payload`` is JSON: the value, ``null`` for a cached ``None``, or ``{"type", "detail"}`` for a
cached error.

Bytes read from a shared server are untrusted: ``decode_record`` checks every field and raises
``InvalidRecord``; a codec either turns the payload into a value of the function's return type
(pydantic validation) or raises. Nothing in a record can name code to run.

A codec whose values cannot be changed once built (``Codec.shared``: the return type is made of
frozen dataclasses or frozen models, scalars, tuples and frozensets only) lets the in-process tier
hand one decoded value to every caller.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import ipaddress
import math
import pathlib
import struct
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import orjson
from pydantic import BaseModel, TypeAdapter

__all__ = [
    "MAGIC",
    "AdapterCodec",
    "Codec",
    "ContainerCodec",
    "InvalidRecord",
    "JsonCodec",
    "Kind",
    "Record",
    "codec_for",
    "decode_record",
    "encode_record",
    "immutable",
]

T = TypeVar("T")

MAGIC = b"\x93ac1"
_HEAD = struct.Struct("!4sdddBH")
_UNSTAMPED = 0xFFFF
_MAX_STAMPS = 1024


class InvalidRecord(ValueError):
    """Bytes that are not a record this cache wrote (corrupt, foreign or of another format)."""


class Kind(enum.IntEnum):
    """What a record's payload holds."""

    VALUE = 0
    NONE = 1
    ERROR = 2


@dataclass(frozen=True, slots=True)
class Record:
    """One cached result and what the cache needs to know about it."""

    payload: bytes
    created: float
    expires: float
    delta: float
    stamps: tuple[int, ...] | None
    kind: Kind = Kind.VALUE


def encode_record(record: Record) -> bytes:
    """The bytes of ``record``."""
    stamps = record.stamps
    count = _UNSTAMPED if stamps is None else len(stamps)
    head = _HEAD.pack(MAGIC, record.created, record.expires, record.delta, record.kind, count)
    if not stamps:
        return head + record.payload
    return head + struct.pack(f"!{len(stamps)}q", *stamps) + record.payload


def decode_record(raw: bytes) -> Record:
    """The record in ``raw``; ``InvalidRecord`` if ``raw`` is anything else."""
    if len(raw) < _HEAD.size or not raw.startswith(MAGIC):
        raise InvalidRecord("not a cache record")
    _, created, expires, delta, kind, count = _HEAD.unpack_from(raw)
    if not (math.isfinite(created) and math.isfinite(expires) and math.isfinite(delta)):
        raise InvalidRecord("non-finite time")
    if delta < 0 or expires < created:
        raise InvalidRecord("inconsistent times")
    if kind > Kind.ERROR:
        raise InvalidRecord("unknown kind")
    offset = _HEAD.size
    stamps: tuple[int, ...] | None = None
    if count != _UNSTAMPED:
        if count > _MAX_STAMPS or len(raw) < offset + 8 * count:
            raise InvalidRecord("truncated stamps")
        stamps = struct.unpack_from(f"!{count}q", raw, offset)
        offset += 8 * count
    payload = raw[offset:]
    if not payload and kind != Kind.NONE:
        raise InvalidRecord("empty payload")
    return Record(payload, created, expires, delta, stamps, Kind(kind))


class Codec(Protocol[T]):
    """Turns a function's results into JSON bytes and back, validating on the way back.

    ``shared``: a value ``loads`` returns cannot be changed, so one may be given to every caller.
    """

    shared: bool

    def dumps(self, value: T) -> bytes:
        """The JSON of ``value``; raises if it has none."""
        ...

    def loads(self, data: bytes) -> T:
        """The value of ``data``; raises if ``data`` is not a valid value."""
        ...


class JsonCodec(Generic[T]):
    """orjson both ways: for functions whose return type is not annotated (or ``Any``).

    Tuples come back as lists and datetimes as strings; annotate the return type to get them back
    as they were.
    """

    shared = False

    def dumps(self, value: T) -> bytes:
        """The JSON of ``value``."""
        return orjson.dumps(value)

    def loads(self, data: bytes) -> T:
        """Plain JSON values: dicts, lists, strings, numbers, booleans, ``None``."""
        return orjson.loads(data)  # type: ignore[no-any-return]


class AdapterCodec(Generic[T]):
    """A pydantic ``TypeAdapter`` of the return annotation: models, dataclasses, typed dicts."""

    def __init__(self, annotation: Any) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(annotation)
        self.shared = immutable(annotation)

    def dumps(self, value: T) -> bytes:
        """The JSON of ``value`` as its type serializes it."""
        return self.adapter.dump_json(value, warnings="error")

    def loads(self, data: bytes) -> T:
        """``data`` validated as the return type."""
        return self.adapter.validate_json(data)


class ContainerCodec(AdapterCodec[T]):
    """A ``dict[str, Any]`` or ``list[Any]`` (bare or not): written by pydantic like any type,
    read back by orjson, checked to be a JSON object (or array).

    Validating ``Any`` items accepts whatever JSON holds, so the check of the container is all
    pydantic would do, at several times the cost of a hit in memory.
    """

    def __init__(self, annotation: Any, container: type[dict[str, Any]] | type[list[Any]]) -> None:
        super().__init__(annotation)
        self.container = container
        self.shared = False

    def loads(self, data: bytes) -> T:
        """``data`` read as JSON; ``ValueError`` unless it is the container."""
        value = orjson.loads(data)
        if type(value) is not self.container:
            raise ValueError(f"not a JSON {self.container.__name__}")
        return cast(T, value)


_ATOMS: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    uuid.UUID,
    datetime.date,  # datetime.datetime too
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    enum.Enum,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    pathlib.PurePath,
)


def immutable(annotation: Any, _seen: frozenset[int] = frozenset()) -> bool:
    """Whether every value of ``annotation`` is deeply immutable: scalars, enums, ``Literal``,
    tuples and frozensets of such, frozen dataclasses and frozen pydantic models whose fields
    all are. Anything else (a ``dict``, a ``list``, ``Any``, a plain class) is not."""
    if id(annotation) in _seen:
        return True  # a recursive type: immutable if the rest of it is
    seen = _seen | {id(annotation)}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return immutable(args[0], seen)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, tuple, frozenset):
        return all(arg is Ellipsis or immutable(arg, seen) for arg in args) and bool(args)
    value = getattr(annotation, "__value__", None)  # a ``type X = ...`` alias
    if value is not None:
        return immutable(value, seen)
    if not isinstance(annotation, type):
        return False
    if issubclass(annotation, _ATOMS):
        return True
    if issubclass(annotation, BaseModel):
        if not annotation.model_config.get("frozen"):
            return False
        fields = [field.annotation for field in annotation.model_fields.values()]
    elif dataclasses.is_dataclass(annotation):
        if not annotation.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            return False
        try:
            hints = typing.get_type_hints(annotation)
        except NameError:
            return False
        fields = [hints[field.name] for field in dataclasses.fields(annotation)]
    else:
        return False
    return all(immutable(field, seen) for field in fields)


def _container(annotation: Any) -> type[dict[str, Any]] | type[list[Any]] | None:
    """``dict`` or ``list`` if ``annotation`` is one holding anything JSON holds, else ``None``."""
    if annotation is dict:
        return dict
    if annotation is list:
        return list
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and args == (str, Any):
        return dict
    if origin is list and args == (Any,):
        return list
    return None


def codec_for(func: Callable[..., Any]) -> Codec[Any]:
    """The codec of ``func``'s results, from its return annotation.

    Raises ``NameError`` when the annotation names something that cannot be resolved.
    """
    hints = typing.get_type_hints(func)
    annotation = hints.get("return", Any)
    if annotation is Any or annotation is object:
        return JsonCodec()
    container = _container(annotation)
    if container is not None:
        return ContainerCodec(annotation, container)
    return AdapterCodec(annotation)
