"""The client's address behind trusted proxies (``X-Forwarded-For``), for limits and logs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import hdrs, web

__all__ = [
    "PROXIES",
    "TrustedProxies",
    "client_address",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# An X-Forwarded-For hop is at most an IPv6 address with a zone: longer is the client's noise.
_MAX_HOP = 64


class TrustedProxies:
    """Proxies (CIDRs) whose ``X-Forwarded-For`` is believed; by default nobody's."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks: list[Network] = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_ip(self, request: web.BaseRequest) -> str:
        """The peer's address or, through trusted proxies, the last untrusted hop of
        ``X-Forwarded-For`` (the entries left of it are the client's word and prove nothing)."""
        peer = request.remote or "unknown"
        if not self.trusts(peer):
            return peer
        chain = [
            hop.strip()
            for value in request.headers.getall(hdrs.X_FORWARDED_FOR, [])
            for hop in value.split(",")
            if hop.strip()
        ]
        for hop in reversed(chain):
            if not self.trusts(hop):
                return hop[:_MAX_HOP]
        return chain[0][:_MAX_HOP] if chain else peer


def client_address(request: web.BaseRequest) -> str:
    """The client's address as the app's ``TRUSTED_PROXIES`` tell it (``app[PROXIES]``)."""
    proxies = request.app.get(PROXIES) if isinstance(request, web.Request) else None
    return proxies.client_ip(request) if proxies is not None else request.remote or "unknown"


PROXIES = web.AppKey("trusted_proxies", TrustedProxies)
