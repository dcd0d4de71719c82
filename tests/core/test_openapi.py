"""/openapi.json and /docs of an application built inline."""

import asyncio
import enum
import re
from typing import Annotated, Any
from uuid import UUID

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, Field
from yarl import URL

import core
from core import Body, Header, Path, Query, Router
from core.openapi import SWAGGER_ASSETS
from core.schemas import InputModel, OutputModel, Page
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import ClientFactory

pytestmark = pytest.mark.unit


class Dimensions(BaseModel):
    width_mm: int
    height_mm: int


class ProductIn(InputModel):
    sku: str
    price_cents: int = Field(ge=0)
    dimensions: Dimensions | None = None


class ProductOut(OutputModel):
    id: UUID
    sku: str
    price_cents: int


class Sort(enum.Enum):
    price = "price"
    name = "name"


def _catalog_router() -> Router:
    router = Router(prefix="/api/v1", tags=["products"])

    @router.get("/products/{product_id}", response=ProductOut)
    async def get_product(
        product_id: Annotated[UUID, Path(description="The product id")],
        fields: Annotated[list[str], Query(alias="field")] = [],  # noqa: B006
        limit: Annotated[int, Query(description="Page size"), Field(ge=1, le=100)] = 20,
        x_request_id: Annotated[str | None, Header()] = None,
    ) -> None:
        """Read one product.

        Any product, by id.
        """

    @router.post("/products", status=201, response=ProductOut, permissions={"catalog:write"})
    async def create_product(product: Annotated[ProductIn, Body()]) -> None:
        """Create a product."""

    @router.get("/me", auth=True, responses={404: "No such user"})
    async def me() -> None:
        return None

    @router.get("/ping")
    async def ping() -> None:
        return None

    return router


@pytest.fixture
async def spec(service_client: ClientFactory, settings: BaseServiceSettings) -> dict[str, Any]:
    app = core.create_app("catalog", settings, routers=[_catalog_router()], version="2.3.4")
    client = await service_client(app)
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    document: dict[str, Any] = await resp.json()
    return document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] == "aioshop catalog"
    assert spec["info"]["version"] == "2.3.4"
    assert set(spec["paths"]) == {
        "/api/v1/products/{product_id}",
        "/api/v1/products",
        "/api/v1/me",
        "/api/v1/ping",
    }


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    refs = _refs(spec)
    assert "#/components/schemas/Dimensions" in refs
    for ref in refs:
        assert isinstance(_resolve(spec, ref), dict), ref


def test_parameters_are_documented(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/v1/products/{product_id}"]["get"]
    assert operation["operationId"] == "get_product"
    assert operation["tags"] == ["products"]
    assert operation["summary"] == "Read one product."
    params = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert set(params) == {
        ("path", "product_id"),
        ("query", "field"),
        ("query", "limit"),
        ("header", "X-Request-Id"),
    }
    product_id = params["path", "product_id"]
    assert product_id["required"] is True
    assert product_id["description"] == "The product id"
    assert product_id["schema"] == {"type": "string", "format": "uuid"}
    limit = params["query", "limit"]
    assert limit["required"] is False
    assert limit["description"] == "Page size"
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert params["query", "field"]["schema"]["type"] == "array"
    assert params["header", "X-Request-Id"]["required"] is False
    assert "requestBody" not in operation


def test_request_body_and_responses_are_documented(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/v1/products"]["post"]
    assert operation["requestBody"] == {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProductIn"}}},
    }
    responses = operation["responses"]
    assert set(responses) == {"201", "400", "401", "403", "413", "415", "422"}
    assert responses["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProductOut"
    }
    assert responses["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationProblem"
    }
    assert responses["401"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert operation["security"] == [{"bearerAuth": []}]
    assert operation["x-permissions"] == ["catalog:write"]
    assert "Requires the permission `catalog:write`." in operation["description"]

    schemas = spec["components"]["schemas"]
    assert set(schemas["ProductIn"]["properties"]) == {"sku", "price_cents", "dimensions"}
    assert schemas["ProductIn"]["additionalProperties"] is False
    assert "errors" in schemas["ValidationProblem"]["properties"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }


def test_auth_routes_declare_401_and_security(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/v1/me"]["get"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert set(operation["responses"]) == {"200", "400", "401", "404"}
    assert operation["responses"]["404"]["description"] == "No such user"

    public = spec["paths"]["/api/v1/ping"]["get"]
    assert "security" not in public
    assert set(public["responses"]) == {"200", "400"}


async def test_enum_parameters_are_valid_and_resolvable(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/products")
    async def list_products(sort: Annotated[Sort, Query()] = Sort.price) -> None:
        return None

    client = await service_client(core.create_app("t", settings, routers=[router]))
    document = await (await client.get("/openapi.json")).json()
    validate(document)
    for ref in _refs(document):
        _resolve(document, ref)


async def test_a_generic_page_response_is_valid_openapi(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/products", response=Page[ProductOut])
    async def list_products() -> None:
        return None

    client = await service_client(core.create_app("t", settings, routers=[router]))
    document = await (await client.get("/openapi.json")).json()
    validate(document)
    for name in document["components"]["schemas"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


@pytest.fixture
async def docs_client(service_client: ClientFactory, settings: BaseServiceSettings) -> Any:
    app = core.create_app("catalog", settings, routers=[_catalog_router()], title="Shop <API>")
    return await service_client(app)


async def test_docs_page_is_local_only_under_a_strict_csp(docs_client: Any) -> None:
    resp = await docs_client.get("/docs")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    html = await resp.text()
    assert "<title>Shop &lt;API&gt;</title>" in html
    assert "http://" not in html
    assert "https://" not in html
    assert "<script>" not in html  # no inline script: the CSP forbids it

    csp = {
        directive.split()[0]: directive.split()[1:]
        for directive in resp.headers["Content-Security-Policy"].split(";")
        if directive.strip()
    }
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    for sources in csp.values():
        assert not any(s.startswith(("http:", "https:")) or s == "*" for s in sources)

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3, assets
    for asset in assets:
        assert asset.startswith("/"), asset
        asset_resp = await docs_client.get(asset)
        assert asset_resp.status == 200, asset
        await asset_resp.read()
    assert 'data-spec="/openapi.json"' in html


async def test_swagger_assets_are_served(docs_client: Any) -> None:
    resp = await docs_client.get("/docs/static/swagger-ui-bundle.js")
    assert resp.status == 200
    assert "javascript" in resp.headers["Content-Type"]
    body = await resp.read()
    assert body == await asyncio.to_thread(SWAGGER_ASSETS["swagger-ui-bundle.js"].read_bytes)

    resp = await docs_client.get("/docs/static/swagger-ui.css")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/css")
    await resp.read()

    resp = await docs_client.get("/docs/init.js")
    assert resp.status == 200
    assert "SwaggerUIBundle" in await resp.text()


@pytest.mark.parametrize(
    "target",
    [
        "/docs/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/docs/static/%2e%2e%2fapp.py",
        "/docs/static/../../etc/passwd",
        "/docs/static/..",
        "/docs/static/index.html",
        "/docs/static/nope.js",
        "/docs/static/swagger-ui-bundle.js.map",
    ],
)
async def test_only_listed_assets_are_served(docs_client: Any, target: str) -> None:
    resp = await docs_client.get(URL(target, encoded=True))
    body = await assert_problem(resp, 404)
    assert "root:" not in await resp.text()
    assert body["title"] == "Not Found"
