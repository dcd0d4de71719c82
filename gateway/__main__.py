"""``python -m gateway [--host H] [--port N] [--certfile F --keyfile F]``: run the gateway."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core.logging import configure_logging
from core.settings import load_settings
from gateway.app import run_gateway
from gateway.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--certfile", default=None, help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--keyfile", default=None, help="PEM private key of --certfile")
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(Settings, **overrides)  # invalid: one line on stderr, exit 1
    configure_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    run_gateway(settings, certfile=args.certfile, keyfile=args.keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
