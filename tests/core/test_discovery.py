"""Service discovery by DNS (core.discovery) against a DNS server the test controls."""

from __future__ import annotations

import pytest

from core.discovery import Discovery, DnsResolver, is_discovered, parse_nameserver, url_for_address
from core.testing import wait_for
from tests.dns_server import ControlledDns, controlled_dns

__all__ = ["controlled_dns"]  # the fixture, imported to be used here


def test_nameservers_and_urls() -> None:
    assert parse_nameserver("10.0.0.10") == ("10.0.0.10", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:54") == ("::1", 54)
    assert parse_nameserver("::1") == ("::1", 53)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        parse_nameserver("dns.example:53")  # a name server is an address
    assert url_for_address("http", "10.1.2.3", 8002) == "http://10.1.2.3:8002"
    assert url_for_address("http", "fd00::7", 8002) == "http://[fd00::7]:8002"
    assert is_discovered("dns+http://products:8002")
    assert not is_discovered("http://products:8002")


async def test_every_a_and_aaaa_record_is_an_instance(controlled_dns: ControlledDns) -> None:
    controlled_dns.set("products.test", ["10.0.0.2", "10.0.0.1", "fd00::5"])
    resolver = DnsResolver([controlled_dns.nameserver], timeout=1.0)
    assert await resolver.addresses("products.test") == ["10.0.0.1", "10.0.0.2", "fd00::5"]
    assert await resolver.addresses("missing.test") == []  # NXDOMAIN: no instance


async def test_discovery_follows_the_records_and_keeps_them_through_a_dns_outage(
    controlled_dns: ControlledDns,
) -> None:
    controlled_dns.set("products.test", ["10.0.0.1"])
    changes: list[list[str]] = []
    discovery = Discovery(
        ["http://static:1", "dns+http://products.test:8002"],
        DnsResolver([controlled_dns.nameserver], timeout=0.3),
        interval=0.1,
        on_change=changes.append,
        min_gap=0.01,
        label="products",
    )
    await discovery.start()
    try:
        assert discovery.urls == ["http://static:1", "http://10.0.0.1:8002"]
        controlled_dns.set("products.test", ["10.0.0.1", "10.0.0.2"])

        async def added() -> bool:
            return discovery.urls[1:] == ["http://10.0.0.1:8002", "http://10.0.0.2:8002"]

        await wait_for(added)
        # The DNS server stops answering: the instances last known stay.
        controlled_dns.answering = False
        asked = controlled_dns.queries

        async def retried_while_down() -> bool:
            return controlled_dns.queries >= asked + 4  # two rounds of A + AAAA, unanswered

        await wait_for(retried_while_down)
        assert discovery.urls[1:] == ["http://10.0.0.1:8002", "http://10.0.0.2:8002"]
        controlled_dns.answering = True
        controlled_dns.set("products.test", ["10.0.0.2"])

        async def removed() -> bool:
            return discovery.urls == ["http://static:1", "http://10.0.0.2:8002"]

        await wait_for(removed)
        assert changes[-1] == discovery.urls
    finally:
        await discovery.stop()


async def test_refresh_soon_resolves_before_the_next_round(controlled_dns: ControlledDns) -> None:
    controlled_dns.set("orders.test", ["10.0.0.1"])
    discovery = Discovery(
        ["dns+http://orders.test:8003"],
        DnsResolver([controlled_dns.nameserver], timeout=1.0),
        interval=3600,  # never by itself within this test
        on_change=lambda urls: None,
        min_gap=0.01,
    )
    await discovery.start()
    try:
        controlled_dns.set("orders.test", ["10.0.0.9"])
        discovery.refresh_soon()

        async def resolved_again() -> bool:
            return discovery.urls == ["http://10.0.0.9:8003"]

        await wait_for(resolved_again, within=3)
    finally:
        await discovery.stop()
