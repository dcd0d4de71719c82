"""RabbitMQ topic matching: words separated by dots, ``*`` one word, ``#`` zero or more words."""

from __future__ import annotations

import functools

__all__ = ["topic_matches", "validate_pattern"]


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid binding key, else raise ``ValueError``."""
    if not pattern or len(pattern) > 255:
        raise ValueError("a binding pattern is 1 to 255 characters")
    for word in pattern.split("."):
        if word in ("*", "#"):
            continue
        if not word or "*" in word or "#" in word:
            raise ValueError(f"invalid binding pattern {pattern!r}")
    return pattern


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether ``routing_key`` matches the binding ``pattern`` as RabbitMQ's topic exchange does."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # '#' takes zero or more words: try every split.
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
