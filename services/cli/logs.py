"""``aioshop logs``: the log files of every process of ``aioshop up`` as one log, in time order,
filtered; with ``-f``, followed until Ctrl-C (``core.logfiles``)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from core.logfiles import Follower, LogFilter, LogLine, parse_since

__all__ = ["FOLLOW_INTERVAL", "cmd_logs"]

# Seconds between two looks at the files with -f: a line shows about this late at most.
FOLLOW_INTERVAL = 0.2


def _filter(args: argparse.Namespace) -> LogFilter:
    services = frozenset(
        name.strip() for spec in args.service for name in spec.split(",") if name.strip()
    )
    level = 0
    if args.level is not None:
        level = logging.getLevelName(args.level.upper())
        if not isinstance(level, int):
            raise ValueError(
                f"--level is one of DEBUG, INFO, WARNING, ERROR, CRITICAL: {args.level!r}"
            )
    since = parse_since(args.since) if args.since is not None else None
    return LogFilter(
        services=services, level=level, correlation_id=args.correlation_id, since=since
    )


def _print(lines: Iterable[LogLine], *, raw: bool, out: TextIO) -> None:
    for line in lines:
        out.write(line.raw.decode("utf-8", "backslashreplace") if raw else line.text())
        out.write("\n")
    out.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the lines of every log file in ``<data-dir>/logs`` (rotated ones included) that
    match the filters, in time order; with ``--follow``, then the new ones as they come."""
    try:
        keep = _filter(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    directory = Path(args.data_dir) / "logs"
    if not directory.is_dir():
        print(
            f"no log files in {directory}: `aioshop up --data-dir {args.data_dir}` writes them",
            file=sys.stderr,
        )
        return 1
    follower = Follower(directory, keep)
    try:
        _print(follower.history(), raw=args.json, out=sys.stdout)
        while args.follow:
            time.sleep(FOLLOW_INTERVAL)
            _print(follower.poll(), raw=args.json, out=sys.stdout)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `aioshop logs | head`
        sys.stderr.close()
    finally:
        follower.close()
    return 0
