"""core.handlers end to end: declarations, validation, auth and rendering through a real app."""

from typing import Annotated, Any
from uuid import UUID, uuid4

import pytest
from aiohttp import web
from pydantic import Field

import core
from core import Body, Header, Path, Principal, Query, Router
from core.auth import TokenCodec
from core.schemas import InputModel, OutputModel
from core.settings import BaseServiceSettings
from core.testing import assert_problem
from tests.core.conftest import REDIS_URL, ClientFactory

pytestmark = pytest.mark.unit


class ItemIn(InputModel):
    name: str = Field(min_length=1)
    price_cents: int = Field(ge=0)


class ItemOut(OutputModel):
    id: int
    name: str
    price_cents: int


class UserOut(OutputModel):
    id: str
    email: str


class UserRecord(UserOut):
    """A stored user: a subclass of the output model that carries a secret."""

    password_hash: str


class StoredUser:
    """What a repository returns: more attributes than the response may show."""

    def __init__(self, id: str, email: str, password_hash: str) -> None:
        self.id = id
        self.email = email
        self.password_hash = password_hash


class Credentials(InputModel):
    email: str
    password: str = Field(min_length=8)


def _locs(body: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in body["errors"]]


async def _app_client(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    router: Router,
    *,
    auth: bool = False,
) -> Any:
    resources = [core.redis_ctx(REDIS_URL), core.auth_ctx(settings)] if auth else []
    app = core.create_app("t", settings, routers=[router], resources=resources)
    return await service_client(app)


async def test_path_query_header_and_body_fail_together_in_one_422(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()
    called = False

    @router.post("/items/{item_id}")
    async def update_item(
        item_id: Annotated[int, Path()],
        limit: Annotated[int, Query(), Field(ge=1, le=100)],
        x_request_id: Annotated[UUID, Header()],
        item: Annotated[ItemIn, Body()],
    ) -> None:
        nonlocal called
        called = True

    client = await _app_client(service_client, settings, router)
    resp = await client.post(
        "/items/abc?limit=0",
        headers={"X-Request-Id": "not-a-uuid"},
        json={"name": "", "price_cents": -1, "colour": "red"},
    )
    body = await assert_problem(resp, 422)
    assert sorted(_locs(body)) == sorted(
        [
            ["path", "item_id"],
            ["query", "limit"],
            ["header", "X-Request-Id"],
            ["body", "name"],
            ["body", "price_cents"],
            ["body", "colour"],
        ]
    )
    assert {e["type"] for e in body["errors"] if e["loc"][0] == "body"} == {
        "string_too_short",
        "greater_than_equal",
        "extra_forbidden",
    }
    assert not called


async def test_missing_required_parameters_are_listed_with_their_location(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/search")
    async def search(
        q: Annotated[str, Query()],
        tenant: Annotated[str, Header(alias="X-Tenant")],
    ) -> dict[str, str]:
        return {"q": q, "tenant": tenant}

    client = await _app_client(service_client, settings, router)
    body = await assert_problem(await client.get("/search"), 422)
    assert sorted(_locs(body)) == [["header", "X-Tenant"], ["query", "q"]]
    assert {e["type"] for e in body["errors"]} == {"missing"}


async def test_a_missing_body_is_listed_with_the_other_failures(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    """The docstring of core.handlers promises one 422 listing every failure."""
    router = Router()

    @router.post("/items")
    async def create_item(
        dry_run: Annotated[bool, Query()],
        item: Annotated[ItemIn, Body()],
    ) -> None:
        return None

    client = await _app_client(service_client, settings, router)
    body = await assert_problem(await client.post("/items?dry_run=maybe"), 422)
    assert sorted(_locs(body)) == [["body"], ["query", "dry_run"]]


async def test_validation_errors_never_echo_the_input(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/login")
    async def login(credentials: Annotated[Credentials, Body()]) -> None:
        return None

    client = await _app_client(service_client, settings, router)
    resp = await client.post("/login", json={"email": "a@example.com", "password": "s3cr"})
    body = await assert_problem(resp, 422)
    assert _locs(body) == [["body", "password"]]
    assert "s3cr" not in await resp.text()


async def test_list_query_parameters_take_repeated_keys(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/items")
    async def list_items(
        ids: Annotated[list[int], Query(alias="id")],
        tags: Annotated[tuple[str, ...], Query(alias="tag")] = (),
        single: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        return {"ids": ids, "tags": list(tags), "single": single}

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/items?id=3&id=1&id=2&tag=a&single=x&single=y")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"ids": [3, 1, 2], "tags": ["a"], "single": "x"}

    resp = await client.get("/items?id=7")
    assert await resp.json() == {"ids": [7], "tags": [], "single": None}

    body = await assert_problem(await client.get("/items?id=1&id=two"), 422)
    assert _locs(body) == [["query", "id", 1]]

    body = await assert_problem(await client.get("/items"), 422)
    assert _locs(body) == [["query", "id"]]


async def test_headers_by_alias_and_by_derived_name(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/whoami")
    async def whoami(
        token: Annotated[str, Header(alias="X-Api-Token")],
        x_tenant_id: Annotated[str | None, Header()] = None,
    ) -> dict[str, str | None]:
        return {"token": token, "tenant": x_tenant_id}

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/whoami", headers={"x-api-token": "t0k", "X-Tenant-Id": "acme"})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"token": "t0k", "tenant": "acme"}

    resp = await client.get("/whoami", headers={"X-Api-Token": "t0k"})
    assert await resp.json() == {"token": "t0k", "tenant": None}

    # The python name is not the wire name.
    body = await assert_problem(await client.get("/whoami", headers={"token": "t0k"}), 422)
    assert _locs(body) == [["header", "X-Api-Token"]]


async def test_defaults_apply_and_are_overridden(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/page")
    async def page(
        limit: Annotated[int, Query(), Field(ge=1, le=100)] = 20,
        verbose: Annotated[bool, Query()] = False,
        sort: Annotated[str, Query()] = "-created_at",
    ) -> dict[str, Any]:
        return {"limit": limit, "verbose": verbose, "sort": sort}

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/page")
    assert await resp.json() == {"limit": 20, "verbose": False, "sort": "-created_at"}

    resp = await client.get("/page?limit=5&verbose=true&sort=price")
    assert await resp.json() == {"limit": 5, "verbose": True, "sort": "price"}

    body = await assert_problem(await client.get("/page?limit=101"), 422)
    assert body["errors"] == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be less than or equal to 100",
            "type": "less_than_equal",
        }
    ]


async def test_path_parameters_are_typed(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/users/{user_id}/items/{n}")
    async def user_item(
        user_id: Annotated[UUID, Path()], n: Annotated[int, Path()]
    ) -> dict[str, Any]:
        return {
            "user_id": str(user_id),
            "n": n,
            "types": [type(user_id).__name__, type(n).__name__],
        }

    client = await _app_client(service_client, settings, router)
    uid = uuid4()
    resp = await client.get(f"/users/{uid}/items/3")
    assert await resp.json() == {"user_id": str(uid), "n": 3, "types": ["UUID", "int"]}
    body = await assert_problem(await client.get("/users/nope/items/3"), 422)
    assert _locs(body) == [["path", "user_id"]]


@pytest.mark.parametrize(
    "make_result",
    [
        pytest.param(lambda: StoredUser("u1", "a@example.com", "$2b$secret"), id="object"),
        pytest.param(
            lambda: UserRecord(id="u1", email="a@example.com", password_hash="$2b$secret"),
            id="subclass-of-the-response-model",
        ),
        pytest.param(
            lambda: {"id": "u1", "email": "a@example.com", "password_hash": "$2b$secret"},
            id="mapping",
        ),
    ],
)
async def test_the_response_model_shapes_the_output(
    service_client: ClientFactory, settings: BaseServiceSettings, make_result: Any
) -> None:
    router = Router()

    @router.get("/me", response=UserOut)
    async def me() -> Any:
        return make_result()

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/me")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert await resp.json() == {"id": "u1", "email": "a@example.com"}
    assert "secret" not in await resp.text()


async def test_a_list_response_model_shapes_every_item_and_the_status_is_used(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/users", status=201, response=list[UserOut])
    async def users() -> list[StoredUser]:
        return [StoredUser("u1", "a@example.com", "h1"), StoredUser("u2", "b@example.com", "h2")]

    client = await _app_client(service_client, settings, router)
    resp = await client.post("/users")
    assert resp.status == 201
    assert await resp.json() == [
        {"id": "u1", "email": "a@example.com"},
        {"id": "u2", "email": "b@example.com"},
    ]


async def test_a_body_is_validated_into_the_declared_model(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/items", status=201, response=ItemOut)
    async def create_item(item: Annotated[ItemIn, Body()]) -> dict[str, Any]:
        assert isinstance(item, ItemIn)
        return {"id": 1, **item.model_dump()}

    client = await _app_client(service_client, settings, router)
    resp = await client.post("/items", json={"name": "  Mug ", "price_cents": 1299})
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {"id": 1, "name": "Mug", "price_cents": 1299}


async def test_returning_none_gives_204_or_the_declared_status(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.delete("/items/{item_id}")
    async def delete_item(item_id: Annotated[int, Path()]) -> None:
        return None

    @router.post("/jobs", status=202)
    async def start_job() -> None:
        return None

    client = await _app_client(service_client, settings, router)
    resp = await client.delete("/items/1")
    assert resp.status == 204
    assert await resp.read() == b""
    resp = await client.post("/jobs")
    assert resp.status == 202
    assert await resp.read() == b""


async def test_a_returned_response_passes_through(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/teapot", response=UserOut)
    async def teapot() -> web.Response:
        return web.Response(status=418, text="short and stout", headers={"X-Kettle": "1"})

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/teapot")
    assert resp.status == 418
    assert await resp.text() == "short and stout"
    assert resp.headers["X-Kettle"] == "1"
    assert resp.headers["Content-Type"].startswith("text/plain")


async def test_the_request_is_injected_by_type(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/echo/{name}")
    async def echo(req: web.Request, name: Annotated[str, Path()]) -> dict[str, str]:
        return {"method": req.method, "path": req.path, "name": name}

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/echo/bob")
    assert await resp.json() == {"method": "GET", "path": "/echo/bob", "name": "bob"}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt"],
)
async def test_auth_routes_refuse_a_missing_or_invalid_token(
    service_client: ClientFactory,
    settings: BaseServiceSettings,
    authorization: str | None,
) -> None:
    router = Router()
    called = False

    @router.get("/private", auth=True)
    async def private() -> dict[str, bool]:
        nonlocal called
        called = True
        return {"ok": True}

    client = await _app_client(service_client, settings, router, auth=True)
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await client.get("/private", headers=headers)
    await assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert not called


async def test_auth_is_checked_before_validation(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/private/{n}", auth=True)
    async def private(n: Annotated[int, Path()]) -> None:
        return None

    client = await _app_client(service_client, settings, router, auth=True)
    await assert_problem(await client.get("/private/not-a-number"), 401)


async def test_a_refresh_token_is_not_an_access_token(
    service_client: ClientFactory, settings: BaseServiceSettings, signer: TokenCodec
) -> None:
    router = Router()

    @router.get("/me", auth=True)
    async def me() -> None:
        return None

    client = await _app_client(service_client, settings, router, auth=True)
    refresh = signer.issue("refresh", user_id="u1", roles=["customer"], family="f1").token
    resp = await client.get("/me", headers={"Authorization": f"Bearer {refresh}"})
    await assert_problem(resp, 401)


def test_a_principal_parameter_without_auth_is_refused_at_declaration() -> None:
    router = Router()
    with pytest.raises(TypeError, match="Principal"):

        @router.get("/me")
        async def me(caller: Principal) -> None:
            return None

    assert router.routes == []


def test_a_parameter_without_a_marker_is_refused_at_declaration() -> None:
    router = Router()
    with pytest.raises(TypeError, match="'limit'"):

        @router.get("/items")
        async def items(limit: int = 20) -> None:
            return None

    with pytest.raises(TypeError, match="'payload'"):

        @router.post("/items")
        async def create(payload: ItemIn) -> None:
            return None

    assert router.routes == []


async def test_a_body_that_is_not_json_is_415(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/items")
    async def create_item(item: Annotated[ItemIn, Body()]) -> None:
        return None

    client = await _app_client(service_client, settings, router)
    resp = await client.post(
        "/items", data="name=Mug", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    await assert_problem(resp, 415)
    resp = await client.post(
        "/items", data=b'{"name": "Mug", "price_cents": 1}', headers={"Content-Type": "text/plain"}
    )
    await assert_problem(resp, 415)


async def test_a_json_body_with_a_charset_is_accepted(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/items", response=ItemIn)
    async def create_item(item: Annotated[ItemIn, Body()]) -> ItemIn:
        return item

    client = await _app_client(service_client, settings, router)
    resp = await client.post(
        "/items",
        data=b'{"name": "Mug", "price_cents": 1}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"name": "Mug", "price_cents": 1}


@pytest.mark.parametrize("payload", [b"{", b"{'name': 'x'}", b"\xff\xfe", b"[1, 2,]"])
async def test_malformed_json_is_400(
    service_client: ClientFactory, settings: BaseServiceSettings, payload: bytes
) -> None:
    router = Router()

    @router.post("/items")
    async def create_item(item: Annotated[ItemIn, Body()]) -> None:
        return None

    client = await _app_client(service_client, settings, router)
    resp = await client.post("/items", data=payload, headers={"Content-Type": "application/json"})
    body = await assert_problem(resp, 400)
    assert body["title"] == "Bad Request"


async def test_a_missing_body_is_422_on_body(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/items")
    async def create_item(item: Annotated[ItemIn, Body()]) -> None:
        return None

    client = await _app_client(service_client, settings, router)
    body = await assert_problem(await client.post("/items"), 422)
    assert body["errors"] == [
        {"loc": ["body"], "msg": "A JSON body is required", "type": "missing"}
    ]


async def test_a_body_of_the_wrong_shape_is_422_at_the_body_root(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.post("/batch")
    async def batch(items: Annotated[list[ItemIn], Body()]) -> dict[str, int]:
        return {"count": len(items)}

    client = await _app_client(service_client, settings, router)
    resp = await client.post("/batch", json=[{"name": "a", "price_cents": 1}])
    assert await resp.json() == {"count": 1}
    body = await assert_problem(await client.post("/batch", json={"name": "a"}), 422)
    assert _locs(body) == [["body"]]
    body = await assert_problem(
        await client.post("/batch", json=[{"name": "a", "price_cents": 1}, {"name": "b"}]), 422
    )
    assert _locs(body) == [["body", 1, "price_cents"]]


def test_a_path_parameter_missing_from_the_template_is_refused_at_declaration() -> None:
    """Such a route could only ever answer 422: the mistake belongs at declaration."""
    router = Router(prefix="/users/{user_id}")
    with pytest.raises(TypeError, match="item_id"):

        @router.get("/items/{id}")
        async def get_item(
            user_id: Annotated[str, Path()], item_id: Annotated[int, Path()]
        ) -> None:
            return None


async def test_a_model_returned_without_a_response_declaration_is_serialized(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/item")
    async def item() -> ItemOut:
        return ItemOut(id=1, name="Mug", price_cents=1299)

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/item")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"id": 1, "name": "Mug", "price_cents": 1299}


async def test_a_result_that_fails_its_response_model_is_a_500_that_leaks_nothing(
    service_client: ClientFactory, settings: BaseServiceSettings
) -> None:
    router = Router()

    @router.get("/me", response=UserOut)
    async def me() -> dict[str, str]:
        return {"id": "u1", "password_hash": "$2b$secret"}  # no email

    client = await _app_client(service_client, settings, router)
    resp = await client.get("/me")
    await assert_problem(resp, 500)
    text = await resp.text()
    assert "secret" not in text
    assert "email" not in text
