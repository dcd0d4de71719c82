"""The record format and the codecs: what goes in comes back, anything else is refused."""

import math
import pickle
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from core.cache.serialize import (
    MAGIC,
    AdapterCodec,
    InvalidRecord,
    JsonCodec,
    Kind,
    Record,
    codec_for,
    decode_record,
    encode_record,
)

pytestmark = pytest.mark.unit


class Product(BaseModel):
    id: int
    name: str
    added: datetime


def test_a_record_round_trips() -> None:
    record = Record(b'{"a":1}', 10.0, 70.0, 0.25, (3, 0, 7))
    assert decode_record(encode_record(record)) == record


def test_unstamped_none_and_error_records_round_trip() -> None:
    for record in (
        Record(b"[1]", 1.0, 2.0, 0.0, None),
        Record(b"", 1.0, 2.0, 0.0, (), Kind.NONE),
        Record(b'{"type":"x","detail":"y"}', 1.0, 2.0, 0.0, (1,), Kind.ERROR),
    ):
        assert decode_record(encode_record(record)) == record


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b'{"v": 1, "exp": 1e12}',
        pickle.dumps(_Boom()),
        MAGIC,
        MAGIC + b"\x00" * 10,
        encode_record(Record(b"1", 1.0, 2.0, 0.0, (1, 2)))[:-10],
        encode_record(Record(b"1", 1.0, math.nan, 0.0, None)),
        encode_record(Record(b"1", 5.0, 2.0, 0.0, None)),
        encode_record(Record(b"1", 1.0, 2.0, -1.0, None)),
        encode_record(Record(b"", 1.0, 2.0, 0.0, None)),
    ],
    ids=lambda raw: repr(raw[:12]),
)
def test_anything_else_is_an_invalid_record(raw: bytes) -> None:
    with pytest.raises(InvalidRecord):
        decode_record(raw)


def test_an_unknown_kind_is_invalid() -> None:
    raw = bytearray(encode_record(Record(b"1", 1.0, 2.0, 0.0, None)))
    raw[4 + 24] = 9  # the kind byte follows the magic and three doubles
    with pytest.raises(InvalidRecord):
        decode_record(bytes(raw))


def test_the_codec_follows_the_return_annotation() -> None:
    async def model() -> Product: ...
    async def plain(): ...  # type: ignore[no-untyped-def]
    async def anything() -> Any: ...

    assert isinstance(codec_for(model), AdapterCodec)
    assert isinstance(codec_for(plain), JsonCodec)
    assert isinstance(codec_for(anything), JsonCodec)


def test_a_model_comes_back_as_the_model() -> None:
    codec: AdapterCodec[Product] = AdapterCodec(Product)
    product = Product(id=1, name="Widget", added=datetime(2025, 1, 2, tzinfo=UTC))
    assert codec.loads(codec.dumps(product)) == product


def test_data_of_the_wrong_shape_is_refused_by_the_typed_codec() -> None:
    codec: AdapterCodec[Product] = AdapterCodec(Product)
    with pytest.raises(ValueError, match="validation error"):
        codec.loads(orjson.dumps({"id": "not a number", "name": 3}))


def test_a_typed_codec_keeps_tuples_and_the_json_codec_gives_lists() -> None:
    typed: AdapterCodec[tuple[int, str]] = AdapterCodec(tuple[int, str])
    assert typed.loads(typed.dumps((1, "a"))) == (1, "a")
    plain: JsonCodec[Any] = JsonCodec()
    assert plain.loads(plain.dumps((1, "a"))) == [1, "a"]
