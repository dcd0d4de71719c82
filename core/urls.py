"""URLs in messages: a server's address shown without its credentials."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["censor_url"]

_SECRET_QUERY_KEYS = ("password", "secret", "token")


def censor_url(url: str) -> str:
    """``url`` with its password (and any password-like query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an invalid URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if any(word in k.lower() for word in _SECRET_QUERY_KEYS) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))
