"""Service discovery by DNS: the instances behind a name are all its A and AAAA records.

An instance list may mix static base URLs and *discovered* ones, written ``dns+http://name:port``
(or ``dns+https://``): each address the name resolves to is one instance,
``http://address:port``. Kubernetes' headless Services and Compose's replicas both publish their
instances this way.

``Discovery`` keeps such a list current: it resolves on start, again every ``interval`` seconds,
and sooner when asked (``refresh_soon``, which callers use when an instance fails: an address that
went away is dropped without waiting for the next round). When a name cannot be resolved (the DNS
server is down, a timeout) the addresses last known for it are kept: a DNS outage must not empty
a healthy pool. A name that resolves to nothing (NXDOMAIN, no records) has no instances.

The resolver is dnspython's asyncio one, so that the name servers can be chosen
(``DISCOVERY_NAMESERVERS``; by default the system's, from ``/etc/resolv.conf``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

__all__ = [
    "DNS_PREFIX",
    "Discovery",
    "DnsResolver",
    "is_discovered",
    "parse_nameserver",
    "url_for_address",
]

log = logging.getLogger("core.discovery")

DNS_PREFIX = "dns+"


def is_discovered(url: str) -> bool:
    """Whether ``url`` names instances to discover (``dns+http://name:port``)."""
    return url.startswith(DNS_PREFIX)


def parse_nameserver(value: str) -> tuple[str, int]:
    """``"10.0.0.10"``, ``"10.0.0.10:5353"`` or ``"[::1]:53"`` -> ``(address, port)``."""
    text = value.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = int(number)
    ipaddress.ip_address(host)  # a name server is an address: ValueError otherwise
    if not 0 < port < 65536:
        raise ValueError(f"not a port: {port}")
    return host, port


def url_for_address(scheme: str, address: str, port: int) -> str:
    """The base URL of an instance at ``address`` (IPv6 in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


class DnsResolver:
    """All A and AAAA records of a name, through ``nameservers`` (or the system's)."""

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = 2.0) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            servers = [parse_nameserver(server) for server in nameservers]
            resolver.nameservers = [host for host, _ in servers]
            # dnspython keeps one port for all; a test server has its own.
            resolver.port = servers[0][1]
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = timeout
        resolver.cache = None  # re-resolving is the point: the TTL is our interval
        self._resolver = resolver

    async def addresses(self, name: str) -> list[str]:
        """The addresses of ``name``, sorted; empty if it has none. ``dns.exception.DNSException``
        (a timeout, no name server answering) when it cannot be known."""
        found: list[str] = []
        for answer in await asyncio.gather(
            self._query(name, dns.rdatatype.A), self._query(name, dns.rdatatype.AAAA)
        ):
            found.extend(answer)
        return sorted(set(found))

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [record.to_text() for record in answer]


class Discovery:
    """The current instance URLs of ``specs`` (static and ``dns+`` URLs), kept up to date.

    ``on_change(urls)`` is called with the whole new list whenever it changes. ``urls`` is the
    list now (static ones first, in their order, then discovered ones by address).
    """

    def __init__(
        self,
        specs: Sequence[str],
        resolver: DnsResolver,
        *,
        interval: float,
        on_change: Callable[[list[str]], None],
        min_gap: float = 0.5,
        label: str = "",
    ) -> None:
        self.specs = list(specs)
        self.resolver = resolver
        self.interval = interval
        self.min_gap = min_gap  # between two resolutions, however often a refresh is asked
        self.label = label
        self._on_change = on_change
        self._known: dict[str, list[str]] = {}  # spec -> its instance URLs when last resolved
        self.urls: list[str] = [spec for spec in self.specs if not is_discovered(spec)]
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def dynamic(self) -> bool:
        """Whether some spec is discovered by DNS."""
        return any(is_discovered(spec) for spec in self.specs)

    async def refresh(self) -> list[str]:
        """Resolve every ``dns+`` spec now; report and return the new list."""
        urls: list[str] = []
        for spec in self.specs:
            if not is_discovered(spec):
                urls.append(spec)
                continue
            urls.extend(await self._resolve(spec))
        if urls != self.urls:
            log.info("instances of %s: %s", self.label or "upstream", ", ".join(urls) or "none")
            self.urls = urls
            self._on_change(list(urls))
        return urls

    async def _resolve(self, spec: str) -> list[str]:
        parts = urlsplit(spec.removeprefix(DNS_PREFIX))
        if parts.hostname is None:
            raise ValueError(f"no host name in {spec!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self.resolver.addresses(parts.hostname)
        except dns.exception.DNSException as exc:
            log.warning(
                "cannot resolve %s (%s); keeping its last known instances",
                parts.hostname,
                type(exc).__name__,
            )
            return self._known.get(spec, [])
        urls = [url_for_address(parts.scheme, address, port) for address in addresses]
        self._known[spec] = urls
        return urls

    def refresh_soon(self) -> None:
        """Ask for a resolution before the next round (after an instance failed)."""
        self._wake.set()

    async def start(self) -> None:
        """Resolve once, then keep resolving in the background."""
        await self.refresh()
        if self.dynamic:
            self._task = asyncio.create_task(self._run(), name=f"discovery-{self.label}")

    async def stop(self) -> None:
        """Stop resolving."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken round must not end discovery for good
                log.exception("discovery round for %s failed", self.label)
            await asyncio.sleep(self.min_gap)  # rate limit: failures may ask many times a second
