"""The served TLS certificate's expiry in ``/metrics``:
``tls_certificate_expiry_timestamp_seconds{role}``, the Unix time of its ``notAfter``.

``core.runner`` registers it for every site it serves over TLS (the certificate file is the one
``server_ssl_context`` loaded); an alert compares it with ``time()``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["CertificateCollector", "certificate_not_after", "watch_certificate"]

METRIC = "tls_certificate_expiry_timestamp_seconds"


def certificate_not_after(certfile: str) -> float:
    """The ``notAfter`` of the first (the served) certificate of PEM file ``certfile``, as a
    Unix time. Reads the file: call it off the event loop."""
    certificate = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    return certificate.not_valid_after_utc.timestamp()


class CertificateCollector(Collector):
    """One gauge sample per served certificate: ``{role}`` -> its ``notAfter``."""

    def __init__(self) -> None:
        self.expiries: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        """The known certificates' expiries."""
        family = GaugeMetricFamily(
            METRIC, "Unix time at which the served TLS certificate expires", labels=["role"]
        )
        for role, not_after in sorted(self.expiries.items()):
            family.add_metric([role], not_after)
        yield family


_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, CertificateCollector] = (
    weakref.WeakKeyDictionary()
)


def watch_certificate(registry: CollectorRegistry, role: str, not_after: float) -> None:
    """Report ``not_after`` as the expiry of ``role``'s certificate in ``registry``."""
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = _COLLECTORS[registry] = CertificateCollector()
        registry.register(collector)
    collector.expiries[role] = not_after
