"""The routing table (path prefix -> upstream) and method+path rules (public, rate-limited)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Route", "RouteRule", "RouteTable", "has_dot_segments"]

_COMMON_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The tail after a prefix is empty or starts with "/": /api/v1/products is not /api/v1/productsX.
TAIL_PATTERN = "{tail:(?:/.*)?}"


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose path is ``prefix`` or under ``prefix/`` go to ``upstream``."""

    prefix: str
    upstream: str

    @property
    def pattern(self) -> str:
        """The aiohttp route path that matches this prefix and everything under it."""
        return self.prefix + TAIL_PATTERN

    def matches(self, path: str) -> bool:
        """Whether ``path`` is this route's prefix or under it."""
        return path == self.prefix or path.startswith(self.prefix + "/")


class RouteTable:
    """Routes by prefix; ``match`` returns the longest prefix that matches."""

    def __init__(self, routes: Mapping[str, str]) -> None:
        self.routes = sorted(
            (Route(prefix, upstream) for prefix, upstream in routes.items()),
            key=lambda route: len(route.prefix),
            reverse=True,
        )

    def match(self, path: str) -> Route | None:
        """The route of ``path``, or ``None``."""
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    @property
    def upstreams(self) -> set[str]:
        """The names of the upstreams some route leads to."""
        return {route.upstream for route in self.routes}


class RouteRule:
    """Rules like ``"GET,HEAD /api/v1/products/**"``: methods (``*`` for any) and a path glob.

    In the path, ``*`` matches within one segment and ``**`` matches anything, slashes included.
    """

    def __init__(self, rules: Iterable[str]) -> None:
        self.rules = list(rules)
        self._compiled = [_compile(rule) for rule in self.rules]
        # Per method, the rules that name it in one alternation: a request costs one regex
        # match, not one per rule (the edge asks two rule sets on every request).
        self._by_method = {method: self._combine(method) for method in _COMMON_METHODS}

    def _combine(self, method: str) -> tuple[list[str], re.Pattern[str] | None]:
        rules = [
            (rule, regex)
            for rule, (methods, regex) in zip(self.rules, self._compiled, strict=True)
            if methods is None or method in methods
        ]
        if not rules:
            return [], None
        alternation = "|".join(f"(?P<r{i}>{regex.pattern})" for i, (_, regex) in enumerate(rules))
        return [rule for rule, _ in rules], re.compile(alternation)

    def matches(self, method: str, path: str) -> bool:
        """Whether some rule matches the request."""
        return self.first(method, path) is not None

    def first(self, method: str, path: str) -> str | None:
        """The first rule matching the request, as written, or ``None``."""
        method = method.upper()
        rules, regex = self._by_method.get(method) or self._combine(method)
        match = regex.fullmatch(path) if regex is not None else None
        # Alternatives are tried in order: the first rule that matches the whole path wins.
        return rules[int(match.lastgroup[1:])] if match and match.lastgroup else None


def _compile(rule: str) -> tuple[frozenset[str] | None, re.Pattern[str]]:
    methods_text, _, path = rule.strip().partition(" ")
    path = path.strip()
    if not path.startswith("/"):
        raise ValueError(f"a route rule is 'METHODS /path', not {rule!r}")
    methods = None if methods_text == "*" else frozenset(methods_text.upper().split(","))
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
        for part in re.split(r"(\*\*|\*)", path)
    )
    return methods, re.compile(regex)


def has_dot_segments(path: str) -> bool:
    """Whether ``path`` has ``.`` or ``..`` segments, which upstreams might resolve differently."""
    return any(segment in (".", "..") for segment in path.split("/"))
