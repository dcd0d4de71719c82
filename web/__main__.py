"""``python -m web [--host H] [--port N]``: serve the dashboard (default :8080)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core.logging import configure_logging
from core.settings import load_settings
from web.app import run_web
from web.settings import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m web", description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(Settings, **overrides)  # invalid: one line on stderr, exit 1
    configure_logging("web", level=settings.log_level, fmt=settings.log_format)
    run_web(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
