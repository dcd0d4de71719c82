"""Keys and tags from the arguments of a call; memcached's key rules."""

import uuid
from typing import Any

import pytest
from pydantic import BaseModel

from core.cache.keys import CacheKeyError, KeyBuilder, KeySpace
from core.cache.memcached_tier import _memcached_key

pytestmark = pytest.mark.unit


class Query(BaseModel):
    q: str
    page: int = 1


async def product(product_id: uuid.UUID, *, full: bool = False) -> None: ...


def test_a_template_takes_arguments_positional_keyword_or_default() -> None:
    builder = KeyBuilder(product, "product:{product_id}:{full}", ["product:{product_id}"])
    pid = uuid.UUID(int=7)
    expected = f"product:{pid}:~f"
    assert builder.key((pid,), {}) == expected
    assert builder.key((), {"product_id": pid}) == expected
    assert builder.key((pid,), {"full": True}) == f"product:{pid}:~t"
    assert builder.tags((pid,), {}) == (f"product:{pid}",)


def test_template_keys_tell_types_and_values_apart() -> None:
    async def page(limit: int, after: object) -> None: ...

    builder = KeyBuilder(page, "categories:page:{limit}:{after}", ["categories"])
    values: list[object] = [
        None,
        "None",
        1,
        "1",
        1.0,
        True,
        "true",
        "~n",
        "",
        "a:b",
        "a%3Ab",
        ["a"],
        ("a",),
        {"a": 1},
        uuid.UUID(int=1),
    ]
    keys = [builder.key((20, value), {}) for value in values]
    assert len(set(keys)) == len(values), keys
    # No argument can reach into the next field: separators stay where the template put them.
    two = KeyBuilder(page, "p:{after}:{limit}", ())
    assert two.key(("1:2", "3"), {}) != two.key(("1", "2:3"), {})
    assert all(key.count(":") == 3 for key in keys)
    # Readable where nothing is ambiguous; tags stay plain, as invalidate(tags=...) names them.
    assert builder.key((20, "lamps-2"), {}) == "categories:page:20:lamps-2"
    assert builder.key((20, uuid.UUID(int=1)), {}) == f"categories:page:20:{uuid.UUID(int=1)}"
    assert builder.tags((20, None), {}) == ("categories",)


def test_a_template_naming_no_parameter_fails_at_decoration() -> None:
    with pytest.raises(CacheKeyError, match="not a parameter"):
        KeyBuilder(product, "product:{id}", ())
    with pytest.raises(CacheKeyError, match="not a parameter"):
        KeyBuilder(product, None, ["category:{category}"])


def test_a_callable_key_and_tags_get_the_arguments() -> None:
    builder = KeyBuilder(
        product,
        lambda product_id, **_: f"p-{product_id.int}",
        lambda product_id, **_: [f"t{product_id.int}", "all"],
    )
    assert builder.key((uuid.UUID(int=3),), {"full": True}) == "p-3"
    assert builder.tags((uuid.UUID(int=3),), {}) == ("t3", "all")


def test_the_default_key_names_the_function_and_skips_self() -> None:
    class Service:
        async def search(self, query: Query, limit: int = 20) -> list[Any]:
            return []

    builder = KeyBuilder(Service.search, None, ())
    one = builder.key((Service(), Query(q="lamp")), {})
    two = builder.key((Service(),), {"query": Query(q="lamp"), "limit": 20})
    assert one == two
    assert one.startswith(f"{__name__}.test_the_default_key_names_the_function_and_skips_self")
    assert builder.key((Service(), Query(q="lamp", page=2)), {}) != one


def test_the_default_key_hashes_long_arguments() -> None:
    async def search(text: str) -> None: ...

    key = KeyBuilder(search, None, ()).key(("x" * 1000,), {})
    assert len(key) < 200


def test_an_argument_without_a_json_form_is_a_key_error() -> None:
    async def fetch(conn: object) -> None: ...

    with pytest.raises(CacheKeyError, match="pass key="):
        KeyBuilder(fetch, None, ()).key((object(),), {})


def test_the_names_of_a_namespace() -> None:
    space = KeySpace("shop")
    assert space.record("product:1", 2) == "shop:cache:v2:product:1"
    assert space.lock("product:1", 2) == "shop:cache:lock:v2:product:1"
    assert space.version("t:products") == "shop:cache:ver:t:products"
    assert space.channel == "shop:cache:invalidate"


def test_memcached_keys_stay_within_its_rules() -> None:
    assert _memcached_key("shop:cache:v1:product:1") == b"shop:cache:v1:product:1"
    for key in ("shop:cache:v1:" + "x" * 300, "shop:cache:v1:q=lamp shade", "shop:cache:v1:é"):
        hashed = _memcached_key(key)
        assert len(hashed) <= 250
        assert hashed.startswith(b"shop:h:")
        assert all(33 <= byte < 127 for byte in hashed)
    assert _memcached_key("shop:a b") != _memcached_key("shop:a  b")
