"""``aioshop bus parked|replay QUEUE``: look at and resend a queue's parked messages."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.bus import Transport

__all__ = ["cmd_bus"]


def cmd_bus(args: argparse.Namespace) -> int:
    """Inspect or replay a queue's parked messages."""
    return asyncio.run(_bus(args))


async def _bus(args: argparse.Namespace) -> int:
    from core.bus import make_transport
    from core.settings import BaseServiceSettings

    transport = make_transport(BaseServiceSettings())
    await transport.start()
    try:
        async with asyncio.timeout(args.timeout):
            return await _bus_command(transport, args)
    except TimeoutError:
        print(f"the broker did not answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    finally:
        await transport.stop()


async def _bus_command(transport: Transport, args: argparse.Namespace) -> int:
    if args.bus_command == "replay":
        moved = await transport.replay(args.queue, limit=args.limit)
        print(f"replayed {moved} message(s) to {args.queue}")
        return 0
    parked = await transport.parked(args.queue, limit=args.limit)
    for message in parked:
        print(
            f"{message.message_id}  {message.routing_key}  attempts={message.attempts}"
            f"  reason={message.reason}"
        )
        if args.verbose:
            print(f"    {message.body.decode('utf-8', 'replace')}")
    print(f"{len(parked)} parked message(s) on {args.queue}", file=sys.stderr)
    return 0
