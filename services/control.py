"""The control channel of ``aioshop up``: what ``aioshop restart`` finds in the data directory.

``Control`` keeps two files there while the supervisor runs: ``up.json``, the state (the
supervisor's pid, the socket's path, each process's role, port, URL, pid and state), and
``up.sock``, a Unix socket on which a client sends one JSON line, ``{"restart": ROLE}``, and
reads JSON lines of progress back (``{"say": ...}``, the last one with ``"done"`` and ``"ok"``).
The directory is made 0700 and both files are 0600: only this user talks to the supervisor.
Both go away when it stops. The supervisor polls ``accept`` from its loop: nothing here blocks
longer than a client that connected takes to send its line (two seconds at most).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONTROL_SOCKET", "STATE_FILE", "Control", "Request", "running_supervisor"]

STATE_FILE = "up.json"
CONTROL_SOCKET = "up.sock"
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


@dataclass(eq=False)
class Request:
    """One ``aioshop restart`` connected: the role it asks for, and its connection, to which
    progress is sent until ``close``."""

    role: str
    client: socket.socket | None

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON line; a client that went away is dropped (the work goes on)."""
        if self.client is None:
            return
        try:
            self.client.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self.close()

    def finish(self, ok: bool, say: str) -> None:
        """Send the last line and close."""
        self.send({"done": True, "ok": ok, "say": say})
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.close()
            self.client = None


class Control:
    """The state file and the control socket of one supervisor in ``data_dir``."""

    def __init__(self, data_dir: Path, listener: socket.socket) -> None:
        self.data_dir = data_dir
        self.socket_path = (data_dir / CONTROL_SOCKET).absolute()
        self._listener = listener

    @classmethod
    def open(cls, data_dir: Path, say: Callable[[str], None]) -> Control | None:
        """Listen in ``data_dir`` (made 0700); ``None``, after saying why, when another live
        supervisor uses it, it is not this user's own, or its path is too long for a Unix
        socket."""
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = _not_private(data_dir)
        if problem is not None:
            say(f"{data_dir} {problem}: no `aioshop restart` for this one")
            return None
        other = running_supervisor(data_dir)
        if other is not None and other["pid"] != os.getpid():
            say(
                f"another aioshop up (pid {other['pid']}) uses {data_dir}: "
                "`aioshop restart` reaches that one, not this one"
            )
            return None
        path = (data_dir / CONTROL_SOCKET).absolute()
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:
            say(f"{path} is too long for a Unix socket: no `aioshop restart` for this one")
            return None
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket is created 0600: this user only
        try:
            listener.bind(str(path))
        finally:
            os.umask(umask)
        listener.listen(4)
        listener.setblocking(False)
        return cls(data_dir, listener)

    def write_state(self, processes: list[dict[str, Any]], host: str) -> None:
        """Replace ``up.json`` (atomically, 0600) with this supervisor's state."""
        state = {
            "pid": os.getpid(),
            "socket": str(self.socket_path),
            "host": host,
            "processes": processes,
        }
        path = self.data_dir / STATE_FILE
        # A new file of a random name (O_EXCL, 0600): nothing planted in the directory is
        # followed or truncated.
        descriptor, temporary = tempfile.mkstemp(dir=self.data_dir, prefix=".up-", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(state, file, indent=2)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def accept(self) -> Iterator[Request]:
        """The requests of the clients waiting to be accepted (none: returns at once). A
        client that sends no valid request line is closed."""
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(True)
            client.settimeout(2)
            request = Request("", client)
            try:
                body = json.loads(_read_line(client))
                role = body["restart"] if isinstance(body, dict) else None
            except (OSError, ValueError, KeyError):
                role = None
            if not isinstance(role, str):
                request.close()
                continue
            request.role = role
            yield request

    def close(self) -> None:
        """Stop listening; remove the socket and (if it is still this process's) ``up.json``."""
        self._listener.close()
        self.socket_path.unlink(missing_ok=True)
        state = running_supervisor(self.data_dir, alive=False)
        if state is not None and state["pid"] == os.getpid():
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)


def _not_private(data_dir: Path) -> str | None:
    """Why ``data_dir`` cannot hold the control files (``None``: it can). It must be a real
    directory of this user's, closed to others: a directory made 0700 by ``mkdir`` keeps the
    mode it had when it existed already, so that is set here, on this user's own only."""
    info = os.lstat(data_dir)
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory (a symbolic link?)"
    if info.st_uid != os.getuid():
        return "belongs to another user"
    if info.st_mode & 0o077:
        os.chmod(data_dir, 0o700)
    return None


def running_supervisor(data_dir: Path, *, alive: bool = True) -> dict[str, Any] | None:
    """The state ``aioshop up`` wrote in ``data_dir`` (``up.json``), if any, and (with
    ``alive``) only if its process still runs."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        return None
    if alive:
        try:
            os.kill(state["pid"], 0)
        except (ProcessLookupError, PermissionError):  # gone, or not this user's
            return None
    return state


def _read_line(client: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = client.recv(limit)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]
