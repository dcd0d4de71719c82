"""The gateway's pure parts around rate limiting, routing and balancing, without Redis or a
server: the ``RateLimit-*`` headers, which policy a request falls under, the rate settings, route
rules and the balancer's choice (the GCRA itself is a Lua script: ``test_ratelimit.py``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from gateway.balancer import BreakerConfig, Pool
from gateway.ratelimit import RateDecision, RatePolicies, RatePolicy, rate_limit_headers
from gateway.retry import RetryBudget
from gateway.routing import Route, RouteRule, RouteTable, has_dot_segments
from gateway.settings import DEFAULT_ROUTES, Settings, parse_rate

pytestmark = pytest.mark.unit

T = TypeVar("T")

LOGIN = "POST /api/v1/auth/login"
REGISTER = "POST /api/v1/auth/register"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, env="test", **values)


# RateLimit-* headers ------------------------------------------------------------------------------


def _decision(
    *,
    allowed: bool = True,
    limit: int = 10,
    period: float = 60.0,
    remaining: int = 3,
    reset: float = 12.0,
    retry_after: float = 0.0,
) -> RateDecision:
    return RateDecision("default", allowed, limit, period, remaining, reset, retry_after)


@pytest.mark.parametrize(
    ("reset", "header"),
    [(0.0, "0"), (0.001, "1"), (1.0, "1"), (1.0001, "2"), (59.5, "60"), (-0.5, "0")],
)
def test_reset_is_whole_seconds_rounded_up_and_never_negative(reset: float, header: str) -> None:
    assert rate_limit_headers(_decision(reset=reset))["RateLimit-Reset"] == header


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(0.0, "1"), (0.2, "1"), (1.0, "1"), (2.0, "2"), (2.0001, "3"), (59.9, "60")],
)
def test_retry_after_of_a_refusal_is_at_least_one_second_rounded_up(
    retry_after: float, header: str
) -> None:
    headers = rate_limit_headers(_decision(allowed=False, remaining=0, retry_after=retry_after))

    assert headers["Retry-After"] == header
    assert headers["RateLimit-Remaining"] == "0"


def test_an_allowed_request_has_no_retry_after() -> None:
    headers = rate_limit_headers(_decision(allowed=True, retry_after=5.0))

    assert headers == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "3",
        "RateLimit-Reset": "12",
        "RateLimit-Policy": "10;w=60",
    }


@pytest.mark.parametrize(
    ("limit", "period", "policy"),
    [
        (600, 60.0, "600;w=60"),
        (10, 0.5, "10;w=0.5"),
        (1, 3600.0, "1;w=3600"),
        (5, 1.25, "5;w=1.25"),
    ],
)
def test_the_policy_header_names_the_limit_and_its_window(
    limit: int, period: float, policy: str
) -> None:
    headers = rate_limit_headers(_decision(limit=limit, period=period))

    assert headers["RateLimit-Policy"] == policy
    assert headers["RateLimit-Limit"] == str(limit)


# policy selection -------------------------------------------------------------------------------


DEFAULT = RatePolicy("default", 600, 60.0)


def _policies(**overrides: Any) -> RatePolicies:
    values: dict[str, Any] = {
        "default": DEFAULT,
        "strict": (10, 60.0),
        "strict_routes": [LOGIN, REGISTER],
        "exempt": ["/healthz", "/readyz", "/metrics"],
    }
    values.update(overrides)
    return RatePolicies(**values)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_exempt_paths_have_no_policy_whatever_the_method(method: str, path: str) -> None:
    assert _policies().select(method, path) is None


@pytest.mark.parametrize("path", ["/healthz/", "/metrics/x", "/api/v1/metrics", "/Metrics"])
def test_only_the_exact_exempt_paths_are_exempt(path: str) -> None:
    assert _policies().select("GET", path) is DEFAULT


def test_each_strict_route_has_a_bucket_of_its_own_per_ip() -> None:
    policies = _policies()

    login = policies.select("POST", "/api/v1/auth/login")
    register = policies.select("POST", "/api/v1/auth/register")

    assert login == RatePolicy(f"strict:{LOGIN}", 10, 60.0, by_user=False, local=False)
    assert register == RatePolicy(f"strict:{REGISTER}", 10, 60.0, by_user=False, local=False)
    assert policies.select("post", "/api/v1/auth/login") is login  # methods are case-blind


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/auth/login"),  # another method of a strict path
        ("POST", "/api/v1/auth/login/"),
        ("POST", "/api/v1/auth/loginx"),
        ("POST", "/api/v1/auth/refresh"),
        ("GET", "/api/v1/products"),
        ("DELETE", "/api/v1/orders/1"),
    ],
)
def test_everything_else_falls_under_the_default_policy(method: str, path: str) -> None:
    selected = _policies().select(method, path)

    assert selected is DEFAULT
    assert selected.by_user


def test_the_first_matching_strict_rule_names_the_bucket() -> None:
    policies = _policies(strict_routes=["POST /api/v1/auth/*", LOGIN], strict=(3, 1.0))

    selected = policies.select("POST", "/api/v1/auth/login")

    assert selected is not None
    assert (selected.name, selected.limit, selected.period) == (
        "strict:POST /api/v1/auth/*",
        3,
        1.0,
    )


def test_a_strict_route_that_is_not_a_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="METHODS /path"):
        _policies(strict_routes=["/api/v1/auth/login"])


def test_the_settings_make_the_policies_the_gateway_uses() -> None:
    settings = _settings(rate_limit_default="100/10", rate_limit_auth="5/30")
    limit, period = parse_rate(settings.rate_limit_default)
    policies = RatePolicies(
        default=RatePolicy("default", limit, period),
        strict=parse_rate(settings.rate_limit_auth),
        strict_routes=settings.rate_limit_auth_routes,
        exempt=settings.rate_limit_exempt,
    )

    assert policies.select("GET", "/api/v1/products") == RatePolicy("default", 100, 10.0)
    assert policies.select("POST", "/api/v1/auth/register") == RatePolicy(
        f"strict:{REGISTER}", 5, 30.0, by_user=False, local=False
    )
    assert policies.select("GET", "/readyz") is None


# rate settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("10/60", (10, 60.0)), ("1/1", (1, 1.0)), ("600/60", (600, 60.0)), ("007/05", (7, 5.0))],
)
def test_a_rate_is_a_limit_per_seconds(spec: str, parsed: tuple[int, float]) -> None:
    assert parse_rate(spec) == parsed


@pytest.mark.parametrize("spec", ["0/60", "10/0", "0/0"])
def test_parse_rate_refuses_a_zero_limit_or_period(spec: str) -> None:
    with pytest.raises(ValueError, match="both positive"):
        parse_rate(spec)


def test_the_default_rates() -> None:
    settings = _settings()

    assert parse_rate(settings.rate_limit_default) == (600, 60.0)
    assert parse_rate(settings.rate_limit_auth) == (10, 60.0)
    assert settings.rate_limit_auth_routes == [LOGIN, REGISTER]
    assert settings.rate_limit_exempt == ["/healthz", "/readyz", "/metrics"]
    assert settings.rate_limit_enabled is True


@pytest.mark.parametrize(
    "spec",
    [
        "0/60",
        "10/0",
        "-1/60",
        "10/-5",
        "1.5/60",
        "10/0.5",
        "10/60/2",
        "10 /60",
        " 10/60",
        "10/60\n",
        "10/",
        "/60",
        "ten/60",
        "1234567890/60",  # ten digits
        "10/12345678",  # eight digits
        "",
    ],
)
@pytest.mark.parametrize("field", ["rate_limit_default", "rate_limit_auth"])
def test_invalid_rate_settings_are_refused(field: str, spec: str) -> None:
    with pytest.raises(ValidationError) as info:
        _settings(**{field: spec})

    assert [error["loc"] for error in info.value.errors()] == [(field,)]


def test_the_rate_limit_namespace_defaults_under_the_redis_namespace() -> None:
    assert _settings(redis_namespace="shop-a").rate_namespace == "shop-a:gw"
    assert _settings(rate_limit_namespace="edge:eu-1").rate_namespace == "edge:eu-1"


@pytest.mark.parametrize(
    "values",
    [
        {"rate_limit_namespace": "has space"},
        {"rate_limit_namespace": "a" * 65},
        {"rate_limit_namespace": ""},
        {"rate_limit_namespace": "key*glob"},
        {"rate_limit_timeout": 0},
        {"rate_limit_timeout": 10.5},
        {"rate_limit_cooldown": -1},
        {"rate_limit_cooldown": 61},
    ],
)
def test_invalid_limiter_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        _settings(**values)

    assert [error["loc"] for error in info.value.errors()] == [tuple(values)]


def test_limiter_settings_at_their_bounds_are_accepted() -> None:
    settings = _settings(
        rate_limit_namespace="a" * 64, rate_limit_timeout=10, rate_limit_cooldown=0
    )

    assert (settings.rate_limit_timeout, settings.rate_limit_cooldown) == (10.0, 0.0)
    assert settings.rate_namespace == "a" * 64


# routing ----------------------------------------------------------------------------------------


def test_a_route_matches_its_prefix_and_what_is_under_it() -> None:
    route = Route("/api/v1/orders", "orders")

    assert route.pattern == "/api/v1/orders{tail:(?:/.*)?}"
    assert route.matches("/api/v1/orders")
    assert route.matches("/api/v1/orders/")
    assert route.matches("/api/v1/orders/1/cancel")
    assert not route.matches("/api/v1/ordersx")
    assert not route.matches("/api/v1/order")
    assert not route.matches("/API/v1/orders")


def test_the_route_table_tries_longer_prefixes_first_and_knows_its_upstreams() -> None:
    table = RouteTable({"/a": "one", "/a/b/c": "three", "/a/b": "two"})

    assert [route.prefix for route in table.routes] == ["/a/b/c", "/a/b", "/a"]
    assert [table.match(path) for path in ("/a/b/c/d", "/a/b/x", "/a/bc", "/b")] == [
        Route("/a/b/c", "three"),
        Route("/a/b", "two"),
        Route("/a", "one"),
        None,
    ]
    assert RouteTable(DEFAULT_ROUTES).upstreams == {"users", "products", "orders", "web"}
    assert RouteTable({}).match("/") is None


@pytest.mark.parametrize(
    ("rule", "method", "path", "matches"),
    [
        ("* /x/**", "PATCH", "/x/a/b/c", True),
        ("* /x/**", "GET", "/x", False),  # ** follows the slash
        ("* /x/**", "GET", "/x/", True),
        ("GET /a/*", "GET", "/a/b", True),
        ("GET /a/*", "GET", "/a/b/c", False),
        ("GET /a/*/c", "GET", "/a//c", True),  # * may be empty
        ("GET /v1.0/x", "GET", "/v1.0/x", True),
        ("GET /v1.0/x", "GET", "/v1x0/x", False),  # the dot is literal
        ("GET /a+b", "GET", "/aab", False),  # so is every regex character
        ("GET /a+b", "GET", "/a+b", True),
        ("GET,POST /a", "POST", "/a", True),
        ("GET,POST /a", "PUT", "/a", False),
        ("get,head /a", "HEAD", "/a", True),
        ("  GET   /a  ", "GET", "/a", True),
        ("GET /a", "GET", "/a/", False),
        ("GET /a", "GET", "/ab", False),
    ],
)
def test_route_rules(rule: str, method: str, path: str, matches: bool) -> None:
    rules = RouteRule([rule])

    assert rules.matches(method, path) is matches
    assert rules.first(method, path) == (rule if matches else None)


@pytest.mark.parametrize("rule", ["GET", "GET a/b", "/a", ""])
def test_a_rule_without_methods_and_an_absolute_path_is_refused(rule: str) -> None:
    with pytest.raises(ValueError, match="METHODS /path"):
        RouteRule([rule])


@pytest.mark.parametrize(
    ("path", "dotted"),
    [
        ("..", True),
        (".", True),
        ("/a/..", True),
        ("/a/./", True),
        ("/../etc/passwd", True),
        ("/a/.../b", False),
        ("/a/.hidden", False),
        ("/a/b.", False),
        ("/a/..b/c", False),
        ("/a//b", False),
        ("", False),
        ("/", False),
    ],
)
def test_dot_segments(path: str, dotted: bool) -> None:
    assert has_dot_segments(path) is dotted


# balancing ---------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reversed(random.Random):
    """An rng whose sample of two is the first two candidates, second first."""

    def sample(self, population: Sequence[T], k: int, *, counts: Any = None) -> list[T]:
        assert k == 2
        return [population[1], population[0]]


class NoSampling(random.Random):
    """An rng that must not be asked."""

    def sample(self, population: Sequence[T], k: int, *, counts: Any = None) -> list[T]:
        raise AssertionError("a single candidate needs no sampling")


def _pool(urls: list[str], rng: random.Random, clock: Clock | None = None, **config: Any) -> Pool:
    return Pool(
        "orders",
        urls,
        config=BreakerConfig(**config),
        budget=RetryBudget(ratio=0.2, min_per_second=1),
        rng=rng,
        clock=clock,
    )


def test_instances_are_named_after_their_pool_in_order() -> None:
    pool = _pool(["http://a:1", "http://b:2", "http://c:3"], random.Random(1))

    assert [(i.id, i.url, i.upstream) for i in pool.instances] == [
        ("orders-0", "http://a:1", "orders"),
        ("orders-1", "http://b:2", "orders"),
        ("orders-2", "http://c:3", "orders"),
    ]


def test_a_tie_goes_to_the_first_sampled_and_fewer_in_flight_wins_either_way() -> None:
    pool = _pool(["http://a", "http://b"], Reversed())
    a, b = pool.instances

    assert pool.pick() is b  # 0 and 0: the first of the sample
    assert (a.outstanding, b.outstanding) == (0, 1)
    assert pool.pick() is a  # b has one in flight
    assert pool.pick() is b  # 1 and 1 again
    b.end(True)
    b.end(True)
    a.outstanding = 3
    assert pool.pick() is b


def test_a_single_candidate_is_picked_without_sampling() -> None:
    pool = _pool(["http://a", "http://b"], NoSampling())
    a, b = pool.instances

    assert pool.pick(exclude=[a]) is b
    assert pool.pick(exclude=[b]) is a
    assert _pool(["http://only"], NoSampling()).pick() is not None
    assert _pool([], NoSampling()).pick() is None


def test_a_half_open_instance_takes_one_probe_at_a_time() -> None:
    clock = Clock()
    pool = _pool(["http://a"], random.Random(3), clock, eject_after=1, cooldown=5.0)
    (a,) = pool.instances
    assert pool.pick() is a
    a.end(False)  # ejected for 5 s
    assert pool.pick() is None

    clock.now += 5.0
    probe = pool.pick()

    assert probe is a
    assert pool.pick() is None  # the probe is in flight
    a.end(None)  # cancelled: the probe slot is free again
    assert a.outstanding == 0
    assert pool.pick() is a
    a.end(False)  # a failed probe: ejected for twice as long (up to the maximum)
    clock.now += 5.0
    assert pool.pick() is None
    clock.now += 5.0
    assert pool.pick() is a
    a.end(True)
    assert [pool.pick() is a for _ in range(3)] == [True, True, True]  # closed again
    assert a.outstanding == 3


def test_a_passing_health_check_lets_an_ejected_instance_probe_at_once() -> None:
    clock = Clock()
    pool = _pool(["http://a"], random.Random(3), clock, eject_after=1, cooldown=60.0)
    (a,) = pool.instances
    assert pool.pick() is a
    a.end(False)
    assert pool.pick() is None

    a.health_result(True)

    assert pool.pick() is a
    assert pool.pick() is None


@pytest.mark.parametrize(
    ("period", "window"),
    [
        (60.0, "60"),
        (1_000_000.0, "1000000"),
        (1_234_567.0, "1234567"),
        (0.5, "0.5"),
        (2.25, "2.25"),
    ],
)
def test_the_policy_window_is_plain_decimal_seconds(period: float, window: str) -> None:
    decision = RateDecision(
        policy="p", allowed=True, limit=10, period=period, remaining=9, reset=1.0, retry_after=0
    )
    assert rate_limit_headers(decision)["RateLimit-Policy"] == f"10;w={window}"


@pytest.mark.parametrize("field", ["rate_limit_auth_routes", "stream_routes", "public_routes"])
def test_route_rules_are_checked_with_the_settings(field: str) -> None:
    with pytest.raises(ValidationError, match="METHODS /path"):
        Settings(**{field: ["login"]})
    assert getattr(Settings(**{field: ["POST /api/v1/auth/*"]}), field) == ["POST /api/v1/auth/*"]
