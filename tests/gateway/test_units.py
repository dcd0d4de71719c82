"""The gateway's parts alone: routing, rules, settings, budget, balancer, identity (the breaker
is core's: ``tests/core/test_breaker.py``)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from core.auth import Principal
from gateway.auth import identity_headers, verify_identity
from gateway.balancer import BreakerConfig, Pool
from gateway.openapi import merge_documents
from gateway.ratelimit import RateDecision, rate_limit_headers
from gateway.retry import RetryBudget
from gateway.routing import RouteRule, RouteTable, has_dot_segments
from gateway.settings import DEFAULT_PUBLIC_ROUTES, DEFAULT_ROUTES, Settings, parse_instances

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_route_table_matches_the_longest_prefix_on_segment_boundaries() -> None:
    table = RouteTable({**DEFAULT_ROUTES, "/api/v1/products/special": "orders"})
    assert table.match("/api/v1/products").upstream == "products"  # type: ignore[union-attr]
    assert table.match("/api/v1/products/42").upstream == "products"  # type: ignore[union-attr]
    assert table.match("/api/v1/products/special/1").upstream == "orders"  # type: ignore[union-attr]
    assert table.match("/api/v1/auth/login").upstream == "users"  # type: ignore[union-attr]
    assert table.match("/dashboard").upstream == "web"  # type: ignore[union-attr]
    assert table.match("/api/v1/productsX") is None
    assert table.match("/api/v2/products") is None
    assert table.match("/metrics") is None


def test_route_rules_glob_methods_and_segments() -> None:
    rules = RouteRule(DEFAULT_PUBLIC_ROUTES)
    assert rules.matches("POST", "/api/v1/auth/login")
    assert not rules.matches("GET", "/api/v1/auth/login")
    assert rules.matches("get", "/api/v1/products")
    assert rules.matches("HEAD", "/api/v1/products/1/inventory")
    assert not rules.matches("PUT", "/api/v1/products/1/inventory")
    assert not rules.matches("GET", "/api/v1/orders")
    assert rules.matches("DELETE", "/dashboard/anything")
    one_segment = RouteRule(["GET /a/*/c"])
    assert one_segment.matches("GET", "/a/b/c")
    assert not one_segment.matches("GET", "/a/b/x/c")
    assert one_segment.first("GET", "/a/b/c") == "GET /a/*/c"
    with pytest.raises(ValueError, match="METHODS /path"):
        RouteRule(["GET nope"])


def test_dot_segments_are_detected() -> None:
    assert has_dot_segments("/api/v1/products/../users/me")
    assert has_dot_segments("/api/v1/./products")
    assert not has_dot_segments("/api/v1/products/a..b")


def test_settings_parse_instance_lists_and_refuse_nonsense() -> None:
    assert parse_instances(" http://h1:8002, http://h2:8002/ ,") == [
        "http://h1:8002",
        "http://h2:8002",
    ]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="test",
        upstream_products="http://a:1,http://b:2",
    )
    assert settings.upstreams()["products"] == ["http://a:1", "http://b:2"]
    assert settings.port == 8000
    for bad in ({"upstream_users": "ftp://x"}, {"upstream_users": "http://x/api"}):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, env="test", **bad)  # type: ignore[call-arg, arg-type]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, env="test", rate_limit_auth="ten a minute")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, env="test", routes={"/api/": "users"})  # type: ignore[call-arg]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    monkeypatch.setenv("UPSTREAM_PRODUCTS", "http://h1:8002,http://h2:8002")
    settings = Settings(_env_file=None, env="test")  # type: ignore[call-arg]
    assert settings.port == 9100
    assert settings.upstreams()["products"] == ["http://h1:8002", "http://h2:8002"]


def test_retry_budget_allows_a_floor_plus_a_ratio_and_forgets_old_traffic() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.1, window=10, clock=clock)  # floor: 1
    assert budget.try_retry()
    assert not budget.try_retry()
    for _ in range(10):
        budget.record_request()
    assert budget.try_retry()  # 1 < 0.2 * 10 + 1
    assert budget.try_retry()  # 2 < 3
    assert not budget.try_retry()  # a fourth retry would exceed it
    assert budget.retries == 3
    clock.now += 11
    assert budget.retries == 0
    assert budget.try_retry()
    none = RetryBudget(ratio=0, min_per_second=0, clock=clock)
    none.record_request()
    assert not none.try_retry()


def _pool(urls: list[str], *, panic_routing: bool = True, **config: Any) -> Pool:
    return Pool(
        "products",
        urls,
        config=BreakerConfig(**config),
        budget=RetryBudget(ratio=0.2, min_per_second=1),
        rng=random.Random(7),
        panic_routing=panic_routing,
    )


def test_pool_prefers_the_instance_with_fewer_requests_in_flight() -> None:
    pool = _pool(["http://a", "http://b"])
    a, b = pool.instances
    a.outstanding = 50
    picks = [pool.pick() for _ in range(20)]
    assert all(pick is b for pick in picks)
    assert b.outstanding == 20
    for _ in range(20):
        b.end(True)
    counts = {a.id: 0, b.id: 0}
    a.outstanding = 0
    for _ in range(200):
        instance = pool.pick()
        assert instance is not None
        counts[instance.id] += 1
        instance.end(True)
    assert min(counts.values()) > 50, counts  # idle instances share the load


def test_pool_skips_ejected_unhealthy_and_excluded_instances() -> None:
    pool = _pool(["http://a", "http://b"], eject_after=2, unhealthy_threshold=2)
    a, b = pool.instances
    for _ in range(2):
        assert a.begin()
        a.end(False)
    assert not a.available
    assert pool.pick() is b
    b.end(True)
    assert pool.pick(exclude=[b]) is None
    b.health_result(False)  # the first check decides alone
    assert not b.healthy
    assert pool.pick() is None
    assert not pool.healthy
    b.health_result(True)
    assert pool.pick() is b


def test_a_pool_with_no_ready_instance_routes_to_those_that_still_answer() -> None:
    pool = _pool(["http://a", "http://b", "http://c"], unhealthy_threshold=1)
    a, b, c = pool.instances
    a.health_result(False, answered=True)  # up, but a dependency it needs is down: 503
    b.health_result(True)
    c.health_result(False)  # not answering at all: gone
    assert not pool.panicking
    assert {pool.pick() for _ in range(20)} == {b}  # a ready instance: only it
    b.health_result(False, answered=True)
    assert pool.panicking
    assert not pool.healthy  # the gateway's own readiness still says no instance is ready
    assert {pool.pick() for _ in range(40)} == {a, b}  # never c, which does not answer
    assert pool.pick(exclude=[a, b]) is None
    a.health_result(False)
    b.health_result(False)
    assert not pool.panicking  # nothing answers: nothing to route to
    assert pool.pick() is None
    off = _pool(["http://a"], unhealthy_threshold=1, panic_routing=False)
    off.instances[0].health_result(False, answered=True)
    assert not off.panicking
    assert off.pick() is None


def test_health_thresholds_after_the_first_check() -> None:
    pool = _pool(["http://a"], unhealthy_threshold=2, healthy_threshold=2)
    (a,) = pool.instances
    a.health_result(True)
    a.health_result(False)
    assert a.healthy
    a.health_result(False)
    assert not a.healthy
    a.health_result(True)
    assert not a.healthy
    a.health_result(True)
    assert a.healthy


def test_identity_headers_are_signed_and_verified() -> None:
    principal = Principal(
        user_id="u1",
        roles=frozenset({"customer", "admin"}),
        jti="j",
        family="f",
        issued_at=0.0,
        expires_at=0,
    )
    assert identity_headers(principal, secret=None) == {
        "X-Authenticated-User": "u1",
        "X-Authenticated-Roles": "admin,customer",
    }
    headers = identity_headers(principal, secret=b"s3cret", now=1000)
    assert verify_identity(headers, secret=b"s3cret", now=1010) == (
        "u1",
        frozenset({"admin", "customer"}),
    )
    assert verify_identity(headers, secret=b"other", now=1010) is None
    assert verify_identity(headers, secret=b"s3cret", now=2000) is None  # too old
    forged = {**headers, "X-Authenticated-Roles": "admin,customer,root"}
    assert verify_identity(forged, secret=b"s3cret", now=1010) is None
    assert verify_identity({"X-Authenticated-User": "u1"}, secret=b"s3cret") is None


def test_rate_limit_headers() -> None:
    allowed = RateDecision("p", True, 10, 60, 7, 18.2, 0)
    assert rate_limit_headers(allowed) == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "19",
        "RateLimit-Policy": "10;w=60",
    }
    refused = RateDecision("p", False, 10, 60, 0, 60, 5.5)
    assert rate_limit_headers(refused)["Retry-After"] == "6"


def test_merge_renames_clashing_schemas_and_duplicate_operation_ids() -> None:
    problem = {"type": "object", "title": "Problem"}
    users = {
        "paths": {
            "/api/v1/users/me": {
                "get": {
                    "operationId": "me",
                    "responses": {"200": {"$ref": "#/components/schemas/Item"}},
                }
            },
            "/api/v1/products": {"get": {"operationId": "not_mine"}},  # routed elsewhere
        },
        "components": {"schemas": {"Item": {"type": "string"}, "Problem": problem}},
    }
    products = {
        "paths": {
            "/api/v1/products": {
                "get": {
                    "operationId": "me",
                    "responses": {"200": {"$ref": "#/components/schemas/Item"}},
                }
            }
        },
        "components": {"schemas": {"Item": {"type": "integer"}, "Problem": problem}},
    }
    merged = merge_documents(
        {"users": users, "products": products},
        table=RouteTable(DEFAULT_ROUTES),
        public=RouteRule(DEFAULT_PUBLIC_ROUTES),
        missing=["orders"],
    )
    schemas = merged["components"]["schemas"]
    assert schemas["Item"] == {"type": "string"}
    assert schemas["products_Item"] == {"type": "integer"}
    assert schemas["Problem"] == problem  # the same schema is shared, not duplicated
    assert "products_Problem" not in schemas
    listing = merged["paths"]["/api/v1/products"]["get"]
    assert listing["operationId"] == "products_me"
    assert listing["responses"]["200"] == {"$ref": "#/components/schemas/products_Item"}
    assert "429" in listing["responses"]
    assert "401" not in listing["responses"]  # a public route
    me = merged["paths"]["/api/v1/users/me"]["get"]
    assert me["operationId"] == "me"
    assert {"401", "429", "502", "503", "504"} <= set(me["responses"])
    assert "orders" in merged["info"]["description"]
