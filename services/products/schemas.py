"""Request and response bodies of the products service (API.md "Catalog and inventory").

Money is an integer of minor units (``price_cents``, never negative) with an ISO-4217
``currency`` in upper case, ``"USD"`` by default. ``attributes`` is a free JSON object (at most
50 keys, 8 KiB as JSON). A PATCH changes the fields it names; ``null`` is accepted only where the
field may be empty (``category_id``, ``parent_id``: no category, top level).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    JsonValue,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from core.schemas import InputModel, MultiLine, OutputModel

__all__ = [
    "CURRENCIES",
    "MAX_BATCH",
    "MAX_PRICE_CENTS",
    "CategoryIn",
    "CategoryOut",
    "CategoryPatch",
    "InventoryIn",
    "InventoryOut",
    "ProductBatchOut",
    "ProductIds",
    "ProductIn",
    "ProductOut",
    "ProductPatch",
    "ProductSort",
]

# ISO 4217 currencies in circulation (funds, metals and test codes left out).
_ISO_4217 = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
    UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
CURRENCIES = frozenset(_ISO_4217.split())

MAX_PRICE_CENTS = 1_000_000_000_000  # ten billion in major units: beyond any real price
MAX_STOCK = 1_000_000_000
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTES_BYTES = 8192
MAX_BATCH = 100


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise PydanticCustomError(
            "currency_unknown", "must be an ISO 4217 currency code in upper case, e.g. USD"
        )
    return value


def _attributes(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    if len(value) > MAX_ATTRIBUTES:
        raise PydanticCustomError("attributes_too_many", f"at most {MAX_ATTRIBUTES} attributes")
    if len(orjson.dumps(value)) > MAX_ATTRIBUTES_BYTES:
        raise PydanticCustomError(
            "attributes_too_large", f"at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        )
    return value


def _whole(value: Any) -> Any:
    # JSON has one number type: 100.0 is the integer 100 (JSON Schema says so too); 100.5 is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Currency = Annotated[
    str,
    StringConstraints(min_length=3, max_length=3),
    AfterValidator(_currency),
    Field(json_schema_extra={"enum": sorted(CURRENCIES)}),
]
# Amounts in bodies are JSON integers: no strings, fractions or booleans passing for money.
PriceCents = Annotated[int, Strict(), Field(ge=0, le=MAX_PRICE_CENTS), BeforeValidator(_whole)]
Stock = Annotated[int, Strict(), Field(ge=0, le=MAX_STOCK), BeforeValidator(_whole)]
Sku = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# The one multi-line text: newlines and tabs allowed, other control characters not.
Description = Annotated[str, MultiLine(), StringConstraints(max_length=5000)]
Slug = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
]
Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], JsonValue],
    AfterValidator(_attributes),
]


def _split_ids(value: Any) -> Any:
    """``?ids=a,b`` and ``?ids=a&ids=b`` (or both) as one list of ids, first occurrence kept."""
    parts = value if isinstance(value, list) else [value]
    ids: list[Any] = []
    for part in parts:
        ids.extend(part.split(",") if isinstance(part, str) else [part])
    return list(dict.fromkeys(item.strip() if isinstance(item, str) else item for item in ids))


# The ids of ``GET /products/batch``: 1..MAX_BATCH UUIDs, comma-separated and/or repeated.
ProductIds = Annotated[
    list[UUID], BeforeValidator(_split_ids), Field(min_length=1, max_length=MAX_BATCH)
]


class ProductSort(StrEnum):
    """Orders of ``GET /products`` (``-`` descending); with ``q`` and no sort: relevance."""

    price = "price"
    price_desc = "-price"
    name = "name"
    newest = "-created_at"


class _Patch(InputModel):
    """A partial update: absent fields stay; ``null`` only for the fields in ``nullable``."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable:
            raise PydanticCustomError("null_not_allowed", "may be left out, but not null")
        return value


class CategoryIn(InputModel):
    """A new category; ``parent_id`` puts it under another (none: top level)."""

    name: Name
    slug: Slug
    parent_id: UUID | None = None


class CategoryPatch(_Patch):
    """Changes to a category; ``parent_id: null`` moves it to the top level."""

    nullable: ClassVar[frozenset[str]] = frozenset({"parent_id"})

    name: Name | None = None
    slug: Slug | None = None
    parent_id: UUID | None = None


class CategoryOut(OutputModel):
    """A category of the catalog tree."""

    id: UUID
    name: str
    slug: str
    parent_id: UUID | None


class ProductIn(InputModel):
    """A new product; ``stock`` is its initial ``on_hand`` (0 by default)."""

    sku: Sku
    name: Name
    description: Description = ""
    price_cents: PriceCents
    currency: Currency = "USD"
    category_id: UUID | None = None
    attributes: Attributes = Field(default_factory=dict)
    stock: Stock = 0


class ProductPatch(_Patch):
    """Changes to a product (stock changes through its inventory)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"category_id"})

    sku: Sku | None = None
    name: Name | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None
    currency: Currency | None = None
    category_id: UUID | None = None
    attributes: Attributes | None = None


class ProductOut(OutputModel):
    """A product as clients see it; ``stock`` is what can still be ordered (``available``)."""

    id: UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category_id: UUID | None
    attributes: dict[str, Any]
    stock: int
    created_at: datetime
    updated_at: datetime


class ProductBatchOut(OutputModel):
    """Several products: ``items`` in the order asked for, ``missing`` the ids not found."""

    items: list[ProductOut]
    missing: list[UUID]


class InventoryIn(InputModel):
    """The new number of units on hand."""

    on_hand: Stock


class InventoryOut(OutputModel):
    """A product's stock: ``available = on_hand - reserved``."""

    product_id: UUID
    on_hand: int
    reserved: int
    available: int
