"""``python -m tests.security.launch NAME --port N``: serve one app of the system on a bus
exchange of the security suite's own.

``aioshop serve`` always uses the shared exchange ``aioshop.events`` for the products service and
the dashboard; a test session must not exchange events with other sessions running on the same
broker, so this launcher gives every app (``users``, ``products``, ``orders``, ``web``) an
``AmqpTransport`` on ``SECURITY_BUS_EXCHANGE``. Everything else is read from the environment as
``aioshop serve`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from core.bus.amqp import AmqpTransport
from core.logging import configure_logging
from core.runner import run
from core.settings import load_settings
from services import registry

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.security.launch")
    parser.add_argument("name", choices=[*sorted(registry.SERVICES), "web"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    exchange = os.environ["SECURITY_BUS_EXCHANGE"]
    factory: Any
    if args.name == "web":
        from web.app import create_web_app
        from web.settings import Settings as WebSettings

        settings: Any = load_settings(WebSettings, port=args.port)
        factory = create_web_app
    else:
        entry = registry.get(args.name)
        settings = load_settings(entry.settings, port=args.port)
        factory = entry.app_factory()
    configure_logging(args.name, level=settings.log_level, fmt=settings.log_format)
    transport = AmqpTransport(
        settings.amqp_url, exchange=exchange, publish_timeout=settings.bus_publish_timeout
    )
    run(factory(settings, transport=transport), host=settings.host, port=settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
