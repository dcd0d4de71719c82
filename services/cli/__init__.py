"""aioshop: run and manage the shop.

Every process of the system is one `aioshop serve ROLE`; `aioshop up` runs them all on this
machine. Settings come from environment variables (and a .env file): see the README.

The package, by job: ``parser`` (the commands and their help), ``serve``, ``up``, ``restart``,
``admin`` (migrate, create-admin, seed, keygen), ``backup`` (backup, restore) and ``bus`` (the
commands), ``startup`` (one line for a server that cannot be reached, instead of a traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from core.settings import describe_settings_error
from services.cli.parser import build_parser
from services.cli.startup import StartupFailed, censor_url, describe_unreachable

__all__ = ["StartupFailed", "build_parser", "censor_url", "describe_unreachable", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aioshop`` console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ValidationError, SettingsError) as exc:
        # Invalid settings are the operator's to fix: one line, never a traceback or a value.
        print(describe_settings_error(exc), file=sys.stderr)
        return 1
    except StartupFailed as exc:  # a server that cannot be reached: one line, no traceback
        print(exc, file=sys.stderr)
        return 1
    return result
