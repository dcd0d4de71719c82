"""HTTP handlers of the products service: parse, authorize, call the service, shape the response."""

from __future__ import annotations

import dataclasses
import typing
import uuid
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from aiohttp import web
from pydantic import Field, StringConstraints

from core import Body, Path, Query, Router
from core.errors import ValidationFailed
from core.handlers import JsonBody
from core.pagination import Cursor, Limit
from core.schemas import Page
from services.products.keys import PRODUCTS_SERVICE
from services.products.models import Product
from services.products.schemas import (
    MAX_BATCH,
    MAX_PRICE_CENTS,
    CategoryIn,
    CategoryOut,
    CategoryPatch,
    InventoryIn,
    InventoryOut,
    ProductBatchOut,
    ProductIds,
    ProductIn,
    ProductOut,
    ProductPatch,
    ProductSort,
)
from services.products.service import CatalogService, InventoryService

__all__ = ["router"]


router = Router(prefix="/api/v1")

ProductId = Annotated[UUID, Path()]
CategoryId = Annotated[UUID, Path()]


def _product_json_is_product_out() -> bool:
    """Whether a ``Product``'s JSON (what the cache keeps) is its ``ProductOut`` body: the same
    fields, in the same order, of the same types, written alike."""
    fields = typing.get_type_hints(Product)
    ours = [(f.name, fields[f.name]) for f in dataclasses.fields(Product)]
    theirs = [(name, f.annotation) for name, f in ProductOut.model_fields.items()]
    if ours != theirs or any(f.alias for f in ProductOut.model_fields.values()):
        return False
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    sample = Product(
        uuid.UUID(int=1), "S-1", "n\u00e9\n", "d\"", 1, "USD", None,
        {"a": [1, 2.5, None, {"b": "\u2603"}]}, 3, moment, moment,
    )  # fmt: skip
    body = ProductOut.model_validate(sample).model_dump_json().encode()
    return body == CatalogService.product_json(sample)


# The hot read sends the cached JSON as it is, when it is the body ProductOut would make.
_PRODUCT_JSON_IS_PRODUCT_OUT = _product_json_is_product_out()


def _catalog(request: web.Request) -> CatalogService:
    return request.app[PRODUCTS_SERVICE].catalog


def _inventory(request: web.Request) -> InventoryService:
    return request.app[PRODUCTS_SERVICE].inventory


# categories ------------------------------------------------------------------------------------


@router.get("/categories", response=Page[CategoryOut], tags=["catalog"])
async def list_categories(
    request: web.Request, limit: Limit = 20, cursor: Cursor = None
) -> Page[CategoryOut]:
    """The categories, by slug; ``parent_id`` links them into a tree."""
    page = await _catalog(request).list_categories(limit=limit, cursor=cursor)
    return Page[CategoryOut](
        items=[CategoryOut.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/categories",
    status=201,
    response=CategoryOut,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={409: "The slug is taken"},
    idempotent=True,
)
async def create_category(request: web.Request, body: Annotated[CategoryIn, Body()]) -> CategoryOut:
    """Add a category (admin)."""
    category = await _catalog(request).create_category(
        name=body.name, slug=body.slug, parent_id=body.parent_id
    )
    return CategoryOut.model_validate(category)


@router.get(
    "/categories/{category_id}",
    response=CategoryOut,
    tags=["catalog"],
    responses={404: "No such category"},
)
async def get_category(request: web.Request, category_id: CategoryId) -> CategoryOut:
    """One category."""
    return CategoryOut.model_validate(await _catalog(request).get_category(category_id))


@router.patch(
    "/categories/{category_id}",
    response=CategoryOut,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={404: "No such category", 409: "The slug is taken, or the move makes a cycle"},
)
async def patch_category(
    request: web.Request, category_id: CategoryId, body: Annotated[CategoryPatch, Body()]
) -> CategoryOut:
    """Rename a category or move it in the tree (admin)."""
    category = await _catalog(request).update_category(
        category_id, body.model_dump(exclude_unset=True)
    )
    return CategoryOut.model_validate(category)


@router.delete(
    "/categories/{category_id}",
    status=204,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={404: "No such category", 409: "It still has sub-categories or products"},
)
async def delete_category(request: web.Request, category_id: CategoryId) -> None:
    """Delete an empty category (admin)."""
    await _catalog(request).delete_category(category_id)


# products --------------------------------------------------------------------------------------


@router.get("/products", response=Page[ProductOut], tags=["catalog"])
async def list_products(
    request: web.Request,
    limit: Limit = 20,
    cursor: Cursor = None,
    category: Annotated[
        UUID | None, Query(description="A category; its sub-categories are included")
    ] = None,
    q: Annotated[
        str | None,
        Query(description="Full-text search in names and descriptions (web search syntax)"),
        StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    ] = None,
    min_price: Annotated[
        int | None, Query(description="Lowest price_cents"), Field(ge=0, le=MAX_PRICE_CENTS)
    ] = None,
    max_price: Annotated[
        int | None, Query(description="Highest price_cents"), Field(ge=0, le=MAX_PRICE_CENTS)
    ] = None,
    in_stock: Annotated[
        bool | None, Query(description="true: only available products; false: only sold out")
    ] = None,
    sort: Annotated[
        ProductSort | None,
        Query(description="Order; by default relevance with q, else newest first"),
    ] = None,
) -> Page[ProductOut]:
    """Products, keyset-paginated, filtered and sorted."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ValidationFailed(
            [
                {
                    "loc": ["query", "max_price"],
                    "msg": "max_price must not be below min_price",
                    "type": "range_inverted",
                }
            ]
        )
    page = await _catalog(request).list_products(
        limit=limit,
        cursor=cursor,
        sort=sort.value if sort is not None else None,
        category_id=category,
        q=q,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
    )
    return Page[ProductOut](
        items=[ProductOut.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )


# Declared before /products/{product_id}, which would take "batch" as an id otherwise.
@router.get(
    "/products/batch",
    response=ProductBatchOut,
    tags=["catalog"],
    responses={422: "No ids, more than 100, or one that is not a UUID"},
)
async def get_products_batch(
    request: web.Request,
    ids: Annotated[
        ProductIds,
        Query(
            description=f"1 to {MAX_BATCH} product ids, comma-separated (or the key repeated);"
            " duplicates count once"
        ),
    ],
) -> ProductBatchOut:
    """Several products in one read, each from the per-product cache (as fresh as
    ``GET /products/{id}``); unknown ids are listed in ``missing``, not an error."""
    ids = list(dict.fromkeys(ids))  # "A..." and "a..." are one id once parsed
    found = await _catalog(request).get_many(ids)
    return ProductBatchOut(
        items=[ProductOut.model_validate(found[pid]) for pid in ids if pid in found],
        missing=[pid for pid in ids if pid not in found],
    )


@router.get(
    "/products/{product_id}",
    response=ProductOut,
    tags=["catalog"],
    responses={404: "No such product"},
)
async def get_product(request: web.Request, product_id: ProductId) -> ProductOut | JsonBody:
    """One product, with its available ``stock``."""
    if _PRODUCT_JSON_IS_PRODUCT_OUT:
        return JsonBody(await _catalog(request).get_json(product_id))
    return ProductOut.model_validate(await _catalog(request).get(product_id))


@router.post(
    "/products",
    status=201,
    response=ProductOut,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={409: "The SKU is taken"},
    idempotent=True,
)
async def create_product(request: web.Request, body: Annotated[ProductIn, Body()]) -> ProductOut:
    """Add a product (admin); ``stock`` sets its initial units on hand."""
    product = await _catalog(request).create(**body.model_dump())
    return ProductOut.model_validate(product)


@router.patch(
    "/products/{product_id}",
    response=ProductOut,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={404: "No such product", 409: "The SKU is taken"},
)
async def patch_product(
    request: web.Request, product_id: ProductId, body: Annotated[ProductPatch, Body()]
) -> ProductOut:
    """Change some fields of a product (admin)."""
    product = await _catalog(request).update(product_id, body.model_dump(exclude_unset=True))
    return ProductOut.model_validate(product)


@router.delete(
    "/products/{product_id}",
    status=204,
    permissions={"catalog:write"},
    tags=["catalog"],
    responses={404: "No such product", 409: "Orders hold reserved stock of it"},
)
async def delete_product(request: web.Request, product_id: ProductId) -> None:
    """Delete a product and its inventory (admin)."""
    await _catalog(request).delete(product_id)


# inventory -------------------------------------------------------------------------------------


@router.get(
    "/products/{product_id}/inventory",
    response=InventoryOut,
    tags=["inventory"],
    responses={404: "No such product"},
)
async def get_inventory(request: web.Request, product_id: ProductId) -> InventoryOut:
    """A product's stock: on hand, reserved by orders, available."""
    return InventoryOut.model_validate(await _inventory(request).get(product_id))


@router.put(
    "/products/{product_id}/inventory",
    response=InventoryOut,
    permissions={"inventory:write"},
    tags=["inventory"],
    responses={404: "No such product", 409: "on_hand would be below what is reserved"},
)
async def put_inventory(
    request: web.Request, product_id: ProductId, body: Annotated[InventoryIn, Body()]
) -> InventoryOut:
    """Set the units on hand (admin)."""
    inventory = await _inventory(request).set_on_hand(product_id, body.on_hand)
    return InventoryOut.model_validate(inventory)
