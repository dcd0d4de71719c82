"""``aioshop serve ROLE``: run one role (a service, the gateway or the dashboard) in this
process."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.logging import configure_early_logging, configure_logging, log_format
from core.settings import BaseServiceSettings, load_settings
from services import registry
from services.cli.startup import StartupFailed, startup_failure

__all__ = ["cmd_serve"]


def _serve_service(name: str, overrides: dict[str, Any]) -> int:
    from core.runner import run  # looked up at call time: tests replace it

    entry = registry.get(name)
    configure_early_logging(entry.name)
    settings = load_settings(entry.settings, **overrides)
    configure_logging(entry.name, level=settings.log_level, fmt=log_format(settings))
    app = entry.app_factory()(settings)
    run(app, host=settings.host, port=settings.port)
    return 0


def _role_settings(role: str, overrides: dict[str, Any]) -> BaseServiceSettings:
    if role == "gateway":
        from gateway.settings import Settings as GatewaySettings

        return GatewaySettings(**overrides)
    if role == "web":
        from web.settings import Settings as WebSettings

        return WebSettings(**overrides)
    return registry.get(role).settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run one role (a service, the gateway or the dashboard) in this process until
    SIGINT/SIGTERM."""
    if (args.certfile or args.keyfile) and args.role != "gateway":
        print("--certfile and --keyfile are for the gateway only", file=sys.stderr)
        return 2
    if (args.certfile is None) != (args.keyfile is None):
        print("--certfile and --keyfile go together", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    try:
        if args.role == "gateway":
            from gateway.__main__ import serve as serve_gateway

            return serve_gateway(
                host=args.host, port=args.port, certfile=args.certfile, keyfile=args.keyfile
            )
        if args.role == "web":
            from web.__main__ import serve as serve_web

            return serve_web(host=args.host, port=args.port)
        return _serve_service(args.role, overrides)
    except Exception as exc:
        failure = startup_failure(exc, lambda: _role_settings(args.role, overrides))
        if failure is None:
            raise
        raise StartupFailed(f"{args.role}: {failure}") from exc
