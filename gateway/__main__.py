"""``python -m gateway``: the same as ``aioshop serve gateway`` (an alias kept for old scripts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core.logging import configure_early_logging, configure_logging, log_format
from core.settings import load_settings
from gateway.app import run_gateway
from gateway.settings import Settings

__all__ = ["main", "serve"]


def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> int:
    """Serve the gateway until SIGINT/SIGTERM: its settings from the environment (``host`` and
    ``port`` override them), logging set up, over HTTPS with ``certfile`` and ``keyfile``.

    The one code path of ``aioshop serve gateway`` and ``python -m gateway``.
    """
    if (certfile is None) != (keyfile is None):
        raise SystemExit("--certfile and --keyfile go together")
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    configure_early_logging("gateway")
    settings = load_settings(Settings, **overrides)  # invalid: one line on stderr, exit 1
    configure_logging("gateway", level=settings.log_level, fmt=log_format(settings))
    run_gateway(settings, certfile=certfile, keyfile=keyfile)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Run the gateway (the same as: aioshop serve gateway).",
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $HOST, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on (default: $GATEWAY_PORT, else 8000)",
    )
    parser.add_argument("--certfile", default=None, help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--keyfile", default=None, help="PEM private key of --certfile")
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    return serve(host=args.host, port=args.port, certfile=args.certfile, keyfile=args.keyfile)


if __name__ == "__main__":
    sys.exit(main())
