"""``python -m web``: the same as ``aioshop serve web`` (an alias kept for old scripts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core.logging import configure_early_logging, configure_logging, log_format
from core.settings import load_settings
from web.app import run_web
from web.settings import Settings

__all__ = ["main", "serve"]


def serve(*, host: str | None = None, port: int | None = None) -> int:
    """Serve the dashboard until SIGINT/SIGTERM: its settings from the environment (``host`` and
    ``port`` override them), logging set up.

    The one code path of ``aioshop serve web`` and ``python -m web``.
    """
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    configure_early_logging("web")
    settings = load_settings(Settings, **overrides)  # invalid: one line on stderr, exit 1
    configure_logging("web", level=settings.log_level, fmt=log_format(settings))
    run_web(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m web", description="Run the dashboard (the same as: aioshop serve web)."
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $HOST, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port to listen on (default: $WEB_PORT, else 8080)"
    )
    args = parser.parse_args(argv)
    return serve(host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
