"""One process of ``aioshop up``'s plan, and the address a client of this machine calls it on.

Apart from ``services.up`` (which makes the plan) and ``services.supervisor`` (which runs it), so
that neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Process", "client_host"]


@dataclass(frozen=True, slots=True)
class Process:
    """One process to run: ``name`` is unique (``products-1``), ``role`` what it runs."""

    name: str
    role: str
    cmd: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    front: bool = False  # started after every service is ready
    ready_path: str = "/readyz"  # answers 200 once it serves (Prometheus's is /-/ready)

    def url(self, host: str) -> str:
        """The base URL this process answers on."""
        return f"http://{client_host(host)}:{self.port}"


def client_host(host: str) -> str:
    """The address to call a server listening on ``host`` at: loopback for a wildcard."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104  # nosec B104: a comparison, no bind
