"""OpenAPI 3.1 generated from route declarations, and Swagger UI served from packaged assets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any

from aiohttp import web
from openapi_ui_bundles import swagger_ui
from pydantic import BaseModel, TypeAdapter

from core.handlers import RouteDef
from core.schemas import Problem, ValidationProblem

__all__ = ["DOCS_INIT_JS", "SWAGGER_ASSETS", "SWAGGER_STATIC", "build_openapi", "docs_page"]

SWAGGER_STATIC = swagger_ui.static_path
# Listed once at import, so that serving an asset never walks the file system on the loop.
SWAGGER_ASSETS = {
    path.name: path
    for path in SWAGGER_STATIC.iterdir()
    if path.suffix in (".js", ".css", ".png") and not path.name.startswith("index")
}
_REF = "#/components/schemas/{model}"

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Malformed request",
    401: "Missing, invalid, expired or revoked token",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    415: "Body is not JSON",
    422: "Validation failed",
    429: "Rate limit exceeded",
    503: "A dependency is unavailable",
}


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(self, annotation: Any, mode: str = "validation") -> dict[str, Any]:
        """The JSON Schema of ``annotation``; named models become ``$ref``s to components."""
        schema = TypeAdapter(annotation).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        self.schemas.update(schema.pop("$defs", {}))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # Generic models are named like "Page[UserOut]"; component names allow [A-Za-z0-9._-].
            name = re.sub(r"[^A-Za-z0-9._-]", "_", annotation.__name__).strip("_")
            self.schemas[name] = schema
            return {"$ref": _REF.format(model=name)}
        return schema


def _parameters(route: RouteDef, components: _Components) -> list[dict[str, Any]]:
    parameters = []
    for location, group in route.groups.items():
        schema = group.model.model_json_schema(by_alias=True, ref_template=_REF)
        components.schemas.update(schema.pop("$defs", {}))
        required = set(schema.get("required", []))
        for prop, prop_schema in schema.get("properties", {}).items():
            description = prop_schema.pop("description", None)
            prop_schema.pop("title", None)
            parameter: dict[str, Any] = {
                "name": prop,
                "in": location,
                "required": location == "path" or prop in required,
                "schema": prop_schema,
            }
            if description:
                parameter["description"] = description
            parameters.append(parameter)
    return parameters


def _problem(components: _Components, status: int) -> dict[str, Any]:
    model = ValidationProblem if status == 422 else Problem
    return {
        "description": _STATUS_TEXT.get(status, "Error"),
        "content": {"application/problem+json": {"schema": components.schema(model)}},
    }


def _operation(route: RouteDef, components: _Components) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "tags": route.tags}
    if route.summary:
        operation["summary"] = route.summary
    if route.description:
        operation["description"] = route.description
    parameters = _parameters(route, components)
    declared = {(p["in"], p["name"].lower()) for p in parameters}
    if route.idempotent and ("header", "idempotency-key") not in declared:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Repeat a create safely: the same key and body replay the first "
                "response; the same key with another body is a 422.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body_type is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": components.schema(route.body_type)}},
        }
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(route.status, "Success")}
    if route.response is not None:
        success["content"] = {
            "application/json": {"schema": components.schema(route.response, "serialization")}
        }
    responses: dict[str, Any] = {str(route.status): success}
    errors = set(route.responses)
    if route.groups or route.body_type is not None:
        errors.add(422)
    if route.body_type is not None:
        errors |= {400, 413, 415}
    if route.idempotent:
        errors.add(409)
    if route.auth:
        errors.add(401)
        operation["security"] = [{"bearerAuth": []}]
    if route.permissions:
        errors.add(403)
        operation["x-permissions"] = sorted(route.permissions)
        required = ", ".join(f"`{p}`" for p in sorted(route.permissions))
        note = f"Requires the permission {required}."
        operation["description"] = f"{operation.get('description') or ''}\n\n{note}".strip()
    for status in sorted(errors):
        responses[str(status)] = _problem(components, status)
        if status in route.responses:
            responses[str(status)]["description"] = route.responses[status]
    operation["responses"] = responses
    return operation


def build_openapi(
    routes: Iterable[RouteDef], *, title: str, version: str = "1.0.0", description: str = ""
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``routes``."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{init}" data-spec="{spec}"></script>
</body>
</html>
"""

DOCS_INIT_JS = """(function () {
  var spec = document.currentScript.getAttribute("data-spec");
  window.ui = SwaggerUIBundle({url: spec, dom_id: "#swagger-ui", deepLinking: true});
})();
"""

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def docs_page(
    title: str,
    *,
    static: str = "/docs/static",
    init: str = "/docs/init.js",
    spec: str = "/openapi.json",
) -> web.Response:
    """The Swagger UI page (all assets local: it works offline under a strict CSP)."""
    body = _DOCS_HTML.format(
        title=escape(title), static=static, init=init, spec=escape(spec, quote=True)
    )
    response = web.Response(text=body, content_type="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
