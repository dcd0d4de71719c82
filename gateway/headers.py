"""Which headers cross the gateway, in each direction, and who the client is.

To the upstream: everything but hop-by-hop headers (RFC 9110 7.6.1, plus any named in
``Connection``), the client's ``Host``, any ``X-Authenticated-*`` (only the gateway sets those)
and, unless the peer is a trusted proxy, any ``X-Forwarded-*``/``Forwarded`` it sent. The gateway
then sets ``X-Forwarded-For``/``-Proto``/``-Host`` and ``X-Correlation-ID``.

To the client: everything but hop-by-hop headers, ``Date`` and ``Server`` (the gateway's own are
sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from core.forwarded import TrustedProxies

__all__ = ["HOP_BY_HOP", "IDENTITY_PREFIX", "Forwarding", "response_headers"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY_PREFIX = "x-authenticated-"
_FORWARDED = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"}
)
# Never forwarded either way: set by the gateway or by the HTTP layer of each hop.
_REQUEST_DROP = HOP_BY_HOP | {"host", "expect", "x-correlation-id"}
_RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
# The request's drop sets without a ``Connection`` header (the usual case), by (trusted proxy,
# keep the length): built once, not per request.
_REQUEST_DROPS = {
    (trusted, keep): _REQUEST_DROP
    | (frozenset() if trusted else _FORWARDED)
    | (frozenset() if keep else frozenset({"content-length"}))
    for trusted in (False, True)
    for keep in (False, True)
}


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall(hdrs.CONNECTION, []):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream response's headers the client gets."""
    drop = (
        _RESPONSE_DROP | _connection_tokens(upstream)
        if hdrs.CONNECTION in upstream
        else _RESPONSE_DROP
    )
    return CIMultiDict([(k, v) for k, v in upstream.items() if k.lower() not in drop])


class Forwarding:
    """Builds upstream request headers; finds the client address behind trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.proxies = TrustedProxies(trusted_proxies)

    def client_ip(self, request: web.BaseRequest) -> str:
        """The client's address (``core.forwarded.TrustedProxies.client_ip``)."""
        return self.proxies.client_ip(request)

    def upstream_headers(
        self,
        request: web.BaseRequest,
        *,
        correlation_id: str,
        identity: Mapping[str, str],
        keep_length: bool,
    ) -> CIMultiDict[str]:
        """The headers of the request sent upstream.

        ``keep_length``: forward ``Content-Length`` (a streamed body); otherwise the client
        library sets it from the buffered body.
        """
        trusted = self.proxies.trusts(request.remote)
        drop = _REQUEST_DROPS[trusted, keep_length]
        if hdrs.CONNECTION in request.headers:
            drop = drop | _connection_tokens(request.headers)
        headers = CIMultiDict(
            [
                (k, v)
                for k, v in request.headers.items()
                if (low := k.lower()) not in drop and not low.startswith(IDENTITY_PREFIX)
            ]
        )
        peer = request.remote or "unknown"
        previous = request.headers.get(hdrs.X_FORWARDED_FOR) if trusted else None
        headers[hdrs.X_FORWARDED_FOR] = f"{previous}, {peer}" if previous else peer
        if not (trusted and hdrs.X_FORWARDED_PROTO in request.headers):
            headers[hdrs.X_FORWARDED_PROTO] = "https" if request.secure else "http"
        if not (trusted and hdrs.X_FORWARDED_HOST in request.headers) and request.host:
            headers[hdrs.X_FORWARDED_HOST] = request.host
        headers["X-Correlation-ID"] = correlation_id
        headers.update(identity)
        return headers
