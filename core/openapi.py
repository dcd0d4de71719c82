"""OpenAPI 3.1 generated from route declarations, and Swagger UI served from packaged assets."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any, get_args

from aiohttp import web
from openapi_ui_bundles import swagger_ui
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic.json_schema import DefsRef, GenerateJsonSchema, JsonRef, JsonSchemaValue
from pydantic_core import core_schema

from core.handlers import RouteDef
from core.schemas import FORBIDDEN, FORBIDDEN_MULTILINE, MultiLine, Problem, ValidationProblem

__all__ = [
    "DOCS_INIT_JS",
    "SWAGGER_ASSETS",
    "SWAGGER_STATIC",
    "InputJsonSchema",
    "build_openapi",
    "docs_page",
]

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
    400: "Malformed request (not valid HTTP or JSON, or a line over 8 KB)",
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


# What ``core.schemas.clean_text`` refuses in every input string (newline and tab allowed in
# ``MultiLine()`` fields), as ECMA-262 patterns: the same classes as the patterns ``InputModel``
# publishes itself, reaching here what it does not (parameters, keys).
_SINGLE_LINE = f"^[^{FORBIDDEN}]*$"
_MULTI_LINE = f"^[^{FORBIDDEN_MULTILINE}]*$"
# The same for a stripped string that may not be empty: at least one character that is neither
# blank nor forbidden.
_SINGLE_LINE_FILLED = f"^[^{FORBIDDEN}]*[^\\s{FORBIDDEN}][^{FORBIDDEN}]*$"
_MULTI_LINE_FILLED = f"^[^{FORBIDDEN_MULTILINE}]*[^\\s{FORBIDDEN}][^{FORBIDDEN_MULTILINE}]*$"
_MULTI = {_SINGLE_LINE: _MULTI_LINE, _SINGLE_LINE_FILLED: _MULTI_LINE_FILLED}
_JSON_INPUT = "JsonInput"


def _mentions_multiline(annotation: Any, seen: set[int]) -> bool:
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if isinstance(annotation, MultiLine):
        return True
    parts = [*get_args(annotation), *getattr(annotation, "__metadata__", ())]
    return any(_mentions_multiline(part, seen) for part in parts)


def _is_multiline(field: FieldInfo) -> bool:
    seen: set[int] = set()
    return _mentions_multiline(field.annotation, seen) or any(
        _mentions_multiline(item, seen) for item in field.metadata
    )


def _allow_lines(schema: Any) -> None:
    """Swap the single-line pattern for the multi-line one everywhere in ``schema``."""
    if isinstance(schema, dict):
        if schema.get("pattern") in _MULTI:
            schema["pattern"] = _MULTI[schema["pattern"]]
        for value in schema.values():
            _allow_lines(value)
    elif isinstance(schema, list):
        for item in schema:
            _allow_lines(item)


class InputJsonSchema(GenerateJsonSchema):
    """The JSON Schema of request bodies and parameters, with the constraints that validation
    applies but pydantic does not emit, so that the published schema is no looser than the
    validation (schema-valid input is never a 422):

    - every string without a ``pattern`` or ``format`` of its own refuses control characters
      (``core.schemas.clean_text``; newline and tab allowed in ``MultiLine()`` fields), and one
      that is stripped and may not be empty refuses blank strings;
    - a dict whose keys must match a pattern (``patternProperties``) has no other keys.
    """

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        """A string: the control-character rule unless a pattern or format says more; when
        it is stripped (``str_strip_whitespace``) and may not be empty, not blank either."""
        json_schema = super().str_schema(schema)
        if "pattern" not in json_schema and "format" not in json_schema:
            config = getattr(self, "_config", None)  # the model's, while its fields are done
            strips = schema.get("strip_whitespace", getattr(config, "str_strip_whitespace", False))
            filled = bool(strips) and json_schema.get("minLength", 0) >= 1
            json_schema["pattern"] = _SINGLE_LINE_FILLED if filled else _SINGLE_LINE
        return json_schema

    def any_schema(self, schema: core_schema.AnySchema) -> JsonSchemaValue:
        """Any JSON (``JsonValue``, e.g. free attributes): validation cleans every string in it,
        keys included, at any depth, so the schema says so, recursively (``JsonInput``)."""
        ref = _REF.format(model=_JSON_INPUT)
        defs_ref = DefsRef(_JSON_INPUT)
        # Registered as pydantic registers a model's definition (kept, named as it is).
        self.json_to_defs_refs[JsonRef(ref)] = defs_ref
        self._prioritized_defsref_choices[defs_ref] = [defs_ref]
        self.definitions[defs_ref] = {
            "description": "Any JSON value; strings (object keys too) without control characters",
            "anyOf": [
                {"type": "string", "pattern": _SINGLE_LINE},
                {"type": ["number", "boolean", "null"]},
                {"type": "array", "items": {"$ref": ref}},
                {
                    "type": "object",
                    "propertyNames": {"pattern": _SINGLE_LINE},
                    "additionalProperties": {"$ref": ref},
                },
            ],
        }
        return {"$ref": ref}

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        """A dict: keys not matching its ``patternProperties`` are refused."""
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema and "additionalProperties" not in json_schema:
            json_schema["additionalProperties"] = False
        return json_schema

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        """A model: its ``MultiLine()`` fields allow newlines and tabs."""
        json_schema = super().model_schema(schema)
        model = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, field in model.model_fields.items():
            prop = properties.get(field.alias or name)
            if prop is not None and _is_multiline(field):
                _allow_lines(prop)
        return json_schema


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(self, annotation: Any, mode: str = "validation") -> dict[str, Any]:
        """The JSON Schema of ``annotation``; named models become ``$ref``s to components.

        ``mode="input"``: a request body (``InputJsonSchema``); otherwise pydantic's
        ``validation`` or ``serialization`` schema."""
        generator = InputJsonSchema if mode == "input" else GenerateJsonSchema
        schema = TypeAdapter(annotation).json_schema(
            ref_template=_REF,
            mode="validation" if mode == "input" else mode,  # type: ignore[arg-type]
            schema_generator=generator,
        )
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
        schema = group.model.model_json_schema(
            by_alias=True, ref_template=_REF, schema_generator=InputJsonSchema
        )
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
            "content": {
                "application/json": {"schema": components.schema(route.body_type, "input")}
            },
        }
    success: dict[str, Any] = {"description": _STATUS_TEXT.get(route.status, "Success")}
    if route.response is not None:
        success["content"] = {
            "application/json": {"schema": components.schema(route.response, "serialization")}
        }
    responses: dict[str, Any] = {str(route.status): success}
    # 400: any request may be unparseable (a request line or header over 8 KB, a malformed head).
    errors = set(route.responses) | {400}
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
