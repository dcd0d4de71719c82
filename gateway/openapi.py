"""The gateway's ``/openapi.json``: every service's document, merged into one.

Each upstream's ``/openapi.json`` is fetched from an available instance (cached for
``openapi_cache_ttl`` seconds when all answered, a few seconds otherwise). Only paths that the
gateway routes to that same upstream are kept. Schemas with the same name and content are shared;
a name that means different things in two services gets the service's prefix (``orders_Item``)
and that service's references are rewritten. Duplicate operation ids get the same prefix. Each
operation also documents the gateway's own answers: 401 where a token is needed, 429, 502-504.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from gateway.balancer import Pool
from gateway.routing import RouteRule, RouteTable

__all__ = ["OpenAPIMerger", "merge_documents"]

log = logging.getLogger("gateway.openapi")

_REF = "#/components/schemas/"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARTIAL_TTL = 2.0
_GATEWAY_RESPONSES = {
    "429": "Rate limit exceeded (see Retry-After)",
    "502": "The upstream service failed",
    "503": "No healthy instance of the upstream service",
    "504": "The upstream service did not answer in time",
}


def _rename_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF):
                name = value[len(_REF) :]
                out[key] = _REF + renames.get(name, name)
            else:
                out[key] = _rename_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rename_refs(item, renames) for item in node]
    return node


def merge_documents(
    documents: Mapping[str, dict[str, Any]],
    *,
    table: RouteTable,
    public: RouteRule,
    title: str = "aioshop API",
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge the OpenAPI documents of several services (``{service: document}``)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    security_schemes: dict[str, Any] = {}
    tags: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for service, original in documents.items():
        components = original.get("components", {})
        own = components.get("schemas", {})
        renames = {
            name: f"{service}_{name}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        document = _rename_refs(copy.deepcopy(original), renames)
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas.setdefault(renames.get(name, name), schema)
        security_schemes.update(components.get("securitySchemes", {}))
        for tag in document.get("tags", []):
            tags.setdefault(tag["name"], tag)
        for path, item in document.get("paths", {}).items():
            route = table.match(path)
            if route is None or route.upstream != service:
                continue
            for method in _METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                operation_id = operation.get("operationId")
                if operation_id is not None:
                    if operation_id in operation_ids:
                        operation_id = operation["operationId"] = f"{service}_{operation_id}"
                    operation_ids.add(operation_id)
                operation.setdefault("tags", [service])
                _add_gateway_responses(operation, public.matches(method, path))
            paths[path] = item
    description = "All aioshop services behind the gateway."
    if missing:
        description += f" Unavailable while this was built: {', '.join(sorted(missing))}."
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0", "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": security_schemes,
        },
    }
    if tags:
        merged["tags"] = list(tags.values())
    return merged


def _add_gateway_responses(operation: dict[str, Any], public: bool) -> None:
    responses = operation.setdefault("responses", {})
    problem = {"application/problem+json": {"schema": {"$ref": _REF + "Problem"}}}
    extra = dict(_GATEWAY_RESPONSES)
    if not public:
        extra["401"] = "Missing, invalid, expired or revoked token"
    for status, description in extra.items():
        responses.setdefault(status, {"description": description, "content": problem})


class OpenAPIMerger:
    """Fetches, merges and caches the document."""

    def __init__(
        self,
        *,
        pools: Mapping[str, Pool],
        session: aiohttp.ClientSession,
        services: Sequence[str],
        table: RouteTable,
        public: RouteRule,
        ttl: float,
        timeout: float,
    ) -> None:
        self.pools = pools
        self.session = session
        self.services = [name for name in services if name in pools]
        self.table = table
        self.public = public
        self.ttl = ttl
        self.timeout = timeout
        self._cached: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> bytes:
        """The merged document as JSON bytes."""
        async with self._lock:
            if self._cached is not None and time.monotonic() < self._cached[0]:
                return self._cached[1]
            results = await asyncio.gather(*(self._fetch(name) for name in self.services))
            documents = {name: doc for name, doc in zip(self.services, results, strict=True) if doc}
            missing = [name for name in self.services if name not in documents]
            body = orjson.dumps(
                merge_documents(documents, table=self.table, public=self.public, missing=missing)
            )
            ttl = self.ttl if not missing else min(self.ttl, _PARTIAL_TTL)
            self._cached = (time.monotonic() + ttl, body)
            return body

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        for instance in self.pools[service].available():
            try:
                async with asyncio.timeout(self.timeout):
                    async with self.session.get(instance.url + "/openapi.json") as response:
                        if response.status != 200:
                            continue
                        document = orjson.loads(await response.read())
            except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
                log.warning("no OpenAPI document from %s: %r", instance.id, exc)
                continue
            if isinstance(document, dict):
                return document
        return None
