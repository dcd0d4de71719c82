"""``aioshop restart SERVICE``: replace a role's instances one by one under a running
``aioshop up``.

The command finds the supervisor through the state file it keeps in its data directory
(``up.json``), sends its request over the supervisor's Unix socket (``up.sock``, this user's
only) and prints the progress the supervisor reports until every instance is replaced.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

__all__ = ["cmd_restart"]


def cmd_restart(args: argparse.Namespace) -> int:
    """Ask the ``aioshop up`` of ``args.data_dir`` to replace every instance of
    ``args.service``, print its progress; 0 once all are replaced and ready, 1 otherwise (no
    supervisor, a replacement not ready, ``args.timeout`` passed)."""
    from services.control import running_supervisor

    data_dir = Path(args.data_dir)
    state = running_supervisor(data_dir)
    if state is None or not isinstance(state.get("socket"), str):
        print(
            f"no `aioshop up` is running with data directory {data_dir} (nothing alive wrote "
            f"{data_dir / 'up.json'}): start one, or pass the --data-dir it was given",
            file=sys.stderr,
        )
        return 1
    deadline = time.monotonic() + args.timeout
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(5)
        try:
            client.connect(state["socket"])
            client.sendall(json.dumps({"restart": args.service}).encode() + b"\n")
        except OSError as exc:
            print(f"cannot reach `aioshop up` (pid {state['pid']}): {exc}", file=sys.stderr)
            return 1
        return _follow(client, deadline, args.timeout)
    finally:
        client.close()


def _follow(client: socket.socket, deadline: float, timeout: float) -> int:
    """Print each progress line until the supervisor says it is done."""
    buffer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print(
                f"not done within {timeout:g} s: the restart goes on in `aioshop up`",
                file=sys.stderr,
            )
            return 1
        client.settimeout(left)
        try:
            chunk = client.recv(4096)
        except TimeoutError:
            continue
        except OSError as exc:
            print(f"lost `aioshop up`: {exc}", file=sys.stderr)
            return 1
        if not chunk:
            print("`aioshop up` stopped before the restart was done", file=sys.stderr)
            return 1
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            done = bool(message.get("done"))
            ok = bool(message.get("ok"))
            text = str(message.get("say", ""))
            print(text, file=sys.stdout if not done or ok else sys.stderr, flush=True)
            if done:
                return 0 if ok else 1
