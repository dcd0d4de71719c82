"""Route declarations with validated, documented parameters.

A handler declares what it takes with ``Annotated`` markers; core validates all of it before the
handler runs (one 422 listing every failure) and documents the same annotations in OpenAPI::

    router = Router(tags=["users"])

    @router.get("/api/v1/users/{user_id}", response=UserOut, auth=True, permissions={"users:read"})
    async def get_user(
        request: web.Request,
        user_id: Annotated[UUID, Path()],
        verbose: Annotated[bool, Query()] = False,
    ) -> UserOut: ...

Parameters typed ``web.Request`` receive the request and parameters typed ``Principal`` receive the
authenticated caller. A handler returns a model (shaped by ``response``), ``None`` (an empty body
with the route's status, 204 by default for ``None``), a ``JsonBody`` (JSON already encoded in the
shape of ``response``, sent as it is) or any ``web.StreamResponse``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

import orjson
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from core.auth.tokens import Principal
from core.errors import BadRequest, ProblemError, UnsupportedMediaType, ValidationFailed
from core.forwarded import client_address
from core.idempotency import IDEMPOTENCY_HEADER, IdempotencyStore, fingerprint
from core.keys import AUTHENTICATOR, PRINCIPAL, REDIS, SERVICE_NAME, SETTINGS
from core.middleware.errors import problem_from
from core.schemas import clean_field, dump_errors

__all__ = [
    "ROUTES",
    "Body",
    "Header",
    "JsonBody",
    "Path",
    "Query",
    "RouteDef",
    "Router",
    "json_response",
]

Location = Literal["path", "query", "header", "body"]
Handler = Callable[..., Awaitable[Any]]


class _Param:
    location: Location

    def __init__(self, *, alias: str | None = None, description: str | None = None) -> None:
        self.alias = alias
        self.description = description


class Path(_Param):
    """Marks a parameter read from the URL path (``/items/{name}``)."""

    location = "path"


class Query(_Param):
    """Marks a parameter read from the query string; list types take repeated keys."""

    location = "query"


class Header(_Param):
    """Marks a parameter read from a request header (``alias`` names the header)."""

    location = "header"


class Body(_Param):
    """Marks the parameter that receives the JSON request body."""

    location = "body"


def json_response(
    payload: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response from already serialized bytes."""
    return web.Response(
        body=payload, status=status, content_type="application/json", headers=headers
    )


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A response body already encoded as JSON, e.g. kept by a cache: sent with the route's
    status as it is, neither validated nor encoded again. The handler vouches that it is what
    ``response`` would have made of the value (the same fields, in the same form)."""

    body: bytes


@dataclass(slots=True)
class _ParamGroup:
    """The parameters of one location, validated together by one generated model."""

    model: type[BaseModel]
    names: dict[str, str]  # python name -> wire name
    multi: frozenset[str] = frozenset()  # wire names taking repeated values


@dataclass
class RouteDef:
    """Everything known about one declared route, for dispatch and for OpenAPI."""

    method: str
    path: str
    handler: Handler
    status: int
    response: Any
    auth: bool
    permissions: frozenset[str]
    summary: str | None
    description: str | None
    tags: list[str]
    responses: dict[int, str]
    operation_id: str
    idempotent: bool = False
    groups: dict[Location, _ParamGroup] = field(default_factory=dict)
    body_name: str | None = None
    body_adapter: TypeAdapter[Any] | None = None
    body_type: Any = None
    request_names: tuple[str, ...] = ()
    principal_names: tuple[str, ...] = ()
    response_adapter: TypeAdapter[Any] | None = None

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, validate, call the handler and shape its result."""
        kwargs: dict[str, Any] = {}
        caller: str | None = None
        if self.auth:
            authenticator = request.app[AUTHENTICATOR]
            principal = await authenticator.authenticate(request.headers.get("Authorization"))
            authenticator.authorize(principal, self.permissions)
            request[PRINCIPAL] = principal
            caller = principal.user_id
            for name in self.principal_names:
                kwargs[name] = principal
        for name in self.request_names:
            kwargs[name] = request
        key = request.headers.get(IDEMPOTENCY_HEADER) if self.idempotent else None
        if key is None:
            return await self._handle(request, kwargs)
        if caller is None:
            # Anonymous callers' keys are scoped by address (the client's, behind
            # TRUSTED_PROXIES), so strangers neither collide nor share a quota.
            caller = f"anonymous@{client_address(request)}"
        # Body read first: a 413 is raised here, before the key is claimed.
        digest = fingerprint(request.method, request.path_qs, await request.read())
        # Validation before the claim: a request refused before any work records nothing, so
        # the client may fix it and retry with the same key (see core.idempotency).
        await self._validate(request, kwargs)
        return await _idempotency_store(request, anonymous=not self.auth).run(
            scope=f"{request.app[SERVICE_NAME]}:{self.operation_id}:{caller}",
            key=key,
            fingerprint=digest,
            call=lambda: self._call_recording_problems(request, kwargs),
        )

    async def _call_recording_problems(
        self, request: web.Request, kwargs: dict[str, Any]
    ) -> web.StreamResponse:
        """The handler, with a 4xx outcome as a response, so an idempotency key replays it too."""
        try:
            return self.render(await self.handler(**kwargs))
        except ProblemError as exc:
            if exc.status >= 500:
                raise
            return problem_from(request, exc)

    async def _handle(self, request: web.Request, kwargs: dict[str, Any]) -> web.StreamResponse:
        await self._validate(request, kwargs)
        result = await self.handler(**kwargs)
        return self.render(result)

    async def _validate(self, request: web.Request, kwargs: dict[str, Any]) -> None:
        """Fill ``kwargs`` from the parameters and the body, or raise one 400/413/415/422."""
        errors: list[dict[str, Any]] = []
        for location, group in self.groups.items():
            raw = _collect(location, group, request)
            try:
                values = group.model.model_validate(raw)
            except ValidationError as exc:
                errors.extend(_located(location, exc))
            else:
                for name in group.names:
                    kwargs[name] = getattr(values, name)
        if self.body_adapter is not None and self.body_name is not None:
            try:
                payload = await _read_json(request)
            except ValidationFailed as exc:  # a missing body is listed with the other failures
                errors.extend(exc.errors)
            else:
                try:
                    kwargs[self.body_name] = self.body_adapter.validate_python(payload)
                except ValidationError as exc:
                    errors.extend(_located("body", exc))
        if errors:
            raise ValidationFailed(errors)

    def render(self, result: Any) -> web.StreamResponse:
        """Turn a handler's return value into a response."""
        if type(result) is JsonBody:
            return json_response(result.body, self.status)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=self.status if self.status != 200 else 204)
        adapter = self.response_adapter
        if adapter is None:
            if isinstance(result, BaseModel):
                return json_response(result.model_dump_json().encode(), self.status)
            return json_response(orjson.dumps(result), self.status)
        if not (isinstance(self.response, type) and isinstance(result, self.response)):
            result = adapter.validate_python(result, from_attributes=True)
        return json_response(adapter.dump_json(result), self.status)


def _idempotency_store(request: web.Request, *, anonymous: bool) -> IdempotencyStore:
    settings = request.app[SETTINGS]
    # Anonymous callers are told apart by address only, and several may share one (a NAT, or the
    # gateway's when TRUSTED_PROXIES does not name it): their quota is larger (core.idempotency).
    return IdempotencyStore(
        request.app[REDIS],
        namespace=settings.redis_namespace,
        ttl=settings.idempotency_ttl,
        max_keys=(
            settings.idempotency_max_anonymous_keys if anonymous else settings.idempotency_max_keys
        ),
        max_record_bytes=settings.idempotency_max_record_bytes,
    )


def _collect(location: Location, group: _ParamGroup, request: web.Request) -> dict[str, Any]:
    if location == "path":
        source: Mapping[str, str] = request.match_info
        return {wire: source[wire] for wire in group.names.values() if wire in source}
    multi = request.query if location == "query" else request.headers
    raw: dict[str, Any] = {}
    for wire in group.names.values():
        if wire in group.multi:
            values = multi.getall(wire, [])
            if values:
                raw[wire] = values
        else:
            value = multi.get(wire)
            if value is not None:
                raw[wire] = value
    return raw


def _located(location: Location, exc: ValidationError) -> list[dict[str, Any]]:
    errors = dump_errors(exc.errors(include_url=False, include_context=False, include_input=False))
    for error in errors:
        error["loc"] = [location, *error["loc"]]
    return errors


async def _read_json(request: web.Request) -> Any:
    if not request.body_exists:
        raise ValidationFailed(
            [{"loc": ["body"], "msg": "A JSON body is required", "type": "missing"}]
        )
    if request.content_type != "application/json":
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json)")
    data = await request.read()  # raises 413 past client_max_size
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The request body is not valid JSON") from exc


def _is_multi(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _is_multi(get_args(annotation)[0])
    if origin in (list, set, frozenset, tuple, Collection):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_multi(arg) for arg in get_args(annotation) if arg is not type(None))
    return False


def _split(annotation: Any) -> tuple[Any, _Param | None]:
    """Strip our marker from ``Annotated[T, marker, *pydantic_metadata]``."""
    if get_origin(annotation) is not typing.Annotated:
        return annotation, None
    base, *metadata = get_args(annotation)
    markers = [m for m in metadata if isinstance(m, _Param)]
    rest = [m for m in metadata if not isinstance(m, _Param)]
    stripped = typing.Annotated[(base, *rest)] if rest else base
    return stripped, (markers[0] if markers else None)


class _Params(BaseModel):
    """Base of the generated path/query/header models."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> Any:
        return clean_field(cls, value, info)


def _build(route: RouteDef) -> None:
    hints = typing.get_type_hints(route.handler, include_extras=True)
    signature = inspect.signature(route.handler)
    fields: dict[Location, dict[str, Any]] = {}
    names: dict[Location, dict[str, str]] = {}
    multi: dict[Location, set[str]] = {}
    request_names: list[str] = []
    principal_names: list[str] = []
    for name, parameter in signature.parameters.items():
        annotation = hints.get(name, Any)
        stripped, marker = _split(annotation)
        if marker is None:
            if stripped is web.Request:
                request_names.append(name)
                continue
            if stripped is Principal:
                if not route.auth:
                    raise TypeError(f"{route.operation_id}: a Principal parameter needs auth=True")
                principal_names.append(name)
                continue
            raise TypeError(
                f"{route.operation_id}: parameter {name!r} needs Path/Query/Header/Body"
            )
        if isinstance(marker, Body):
            route.body_name = name
            route.body_type = stripped
            route.body_adapter = TypeAdapter(stripped)
            continue
        location = marker.location
        wire = marker.alias or (name.replace("_", "-").title() if location == "header" else name)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields.setdefault(location, {})[name] = (
            stripped,
            Field(default, alias=wire, description=marker.description),
        )
        names.setdefault(location, {})[name] = wire
        if location != "path" and _is_multi(stripped):
            multi.setdefault(location, set()).add(wire)
    declared = set(re.findall(r"\{([^}:]+)", route.path))
    missing = set(names.get("path", {}).values()) - declared
    if missing:
        raise TypeError(
            f"{route.operation_id}: path parameters {sorted(missing)} not in {route.path}"
        )
    for location, location_fields in fields.items():
        model = create_model(
            f"{route.operation_id}_{location}", __base__=_Params, **location_fields
        )
        route.groups[location] = _ParamGroup(
            model=model, names=names[location], multi=frozenset(multi.get(location, ()))
        )
    route.request_names = tuple(request_names)
    route.principal_names = tuple(principal_names)
    if route.response is not None:
        route.response_adapter = TypeAdapter(route.response)


class Router:
    """Collects route declarations; ``setup(app)`` adds them to an application."""

    def __init__(self, *, prefix: str = "", tags: list[str] | None = None) -> None:
        self.prefix = prefix
        self.tags = tags or []
        self.routes: list[RouteDef] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        status: int = 200,
        response: Any = None,
        auth: bool = False,
        permissions: Collection[str] = (),
        summary: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        responses: Mapping[int, str] | None = None,
        operation_id: str | None = None,
        idempotent: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Declare a route; see the module docstring.

        ``idempotent=True`` honours an ``Idempotency-Key`` header (needs ``app[REDIS]``).
        """

        def decorator(handler: Handler) -> Handler:
            route = RouteDef(
                method=method.upper(),
                path=self.prefix + path,
                handler=handler,
                status=status,
                response=response,
                auth=auth or bool(permissions),
                permissions=frozenset(permissions),
                summary=summary or _first_line(handler.__doc__),
                description=description or inspect.getdoc(handler),
                tags=tags if tags is not None else self.tags,
                responses=dict(responses or {}),
                operation_id=operation_id or handler.__name__,
                idempotent=idempotent,
            )
            _build(route)
            self.routes.append(route)
            return handler

        return decorator

    def get(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Declare a GET route."""
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Declare a POST route."""
        return self.route("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Declare a PUT route."""
        return self.route("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Declare a PATCH route."""
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Declare a DELETE route."""
        return self.route("DELETE", path, **kwargs)

    def setup(self, app: web.Application) -> None:
        """Add every declared route to ``app`` (before it starts)."""
        registry = app.get(ROUTES)
        if registry is None:
            registry = []
            app[ROUTES] = registry
        for route in self.routes:
            app.router.add_route(route.method, route.path, route.dispatch, name=route.operation_id)
            registry.append(route)


def _first_line(doc: str | None) -> str | None:
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


ROUTES: web.AppKey[list[RouteDef]] = web.AppKey("routes")
