"""A DNS server the tests control (dnslib): A and AAAA records that a test changes as it runs.

Runs in a thread of its own on 127.0.0.1 (UDP and TCP) at a free port; ``records`` maps a name
(with or without the final dot) to its addresses, IPv4 and IPv6 mixed. ``answering = False``
makes it drop every query (a DNS server that is down, as the resolver sees it: a timeout).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.dns import DNSError
from dnslib.server import BaseResolver, DNSHandler, DNSServer

from core.testing import free_port

__all__ = ["ControlledDns", "controlled_dns"]


class ControlledDns(BaseResolver):  # type: ignore[misc]  # dnslib has no type hints
    """The records and the switch; its ``nameserver`` is ``127.0.0.1:<port>``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answering = True
        self.queries = 0
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @property
    def nameserver(self) -> str:
        """The address to give a resolver."""
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, addresses: list[str]) -> None:
        """Make ``addresses`` the records of ``name`` (none: the name does not exist)."""
        with self._lock:
            self._records[name.rstrip(".").lower()] = list(addresses)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        with self._lock:
            self.queries += 1
            if not self.answering:
                raise DNSError("not answering")  # dnslib sends nothing: the client times out
            name = str(request.q.qname).rstrip(".").lower()
            addresses = self._records.get(name)
        reply = request.reply()
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        wanted = request.q.qtype
        for text in addresses:
            address = ipaddress.ip_address(text)
            if address.version == 4 and wanted == QTYPE.A:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(text), ttl=1))
            elif address.version == 6 and wanted == QTYPE.AAAA:
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(text), ttl=1))
        return reply


class _QuietLogger:
    """dnslib logs every query to stdout by default."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest.fixture
def controlled_dns() -> Iterator[ControlledDns]:
    """A running DNS server whose records the test sets."""
    port = free_port()
    dns = ControlledDns(port)
    servers = [
        DNSServer(dns, port=port, address="127.0.0.1", tcp=tcp, logger=_QuietLogger())
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    yield dns
    for server in servers:
        server.stop()
        server.server.server_close()
