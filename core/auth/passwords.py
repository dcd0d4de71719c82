"""Password hashing with bcrypt, always off the event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import unicodedata
from concurrent.futures import Executor, ThreadPoolExecutor

import bcrypt

__all__ = ["PasswordHasher"]


def _prehash(password: str) -> bytes:
    # NFC first (NIST SP 800-63B): the same password typed on another keyboard or OS may arrive
    # composed or decomposed, and must verify either way, whichever path set it (API or CLI).
    # bcrypt reads at most 72 bytes (bcrypt>=5 raises beyond that) and our passwords may be 128
    # characters of UTF-8: hash first, then base64 so that no NUL byte reaches bcrypt.
    normalized = unicodedata.normalize("NFC", password)
    return base64.b64encode(hashlib.sha256(normalized.encode("utf-8")).digest())


class PasswordHasher:
    """Hashes and verifies passwords in an executor so that bcrypt never blocks the loop."""

    def __init__(self, rounds: int = 12, executor: Executor | None = None) -> None:
        self.rounds = rounds
        # A pool of its own: a login flood must not starve the default executor, which
        # DNS lookups and to_thread calls share.
        self._own = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="bcrypt"
        )
        # A real hash to verify against when the user does not exist, so that a login for an
        # unknown email costs the same time as one with a wrong password. Made on first use.
        self._dummy: bytes | None = None

    def close(self) -> None:
        """Shut down the hashing threads this hasher started."""
        if self._own:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def hash(self, password: str) -> str:
        """Return the bcrypt hash of ``password``."""
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self.rounds)
        digest = await loop.run_in_executor(self._executor, bcrypt.hashpw, _prehash(password), salt)
        return digest.decode("ascii")

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Whether ``password`` matches ``hashed``; ``hashed=None`` costs the same and fails."""
        loop = asyncio.get_running_loop()
        if hashed is None and self._dummy is None:
            self._dummy = (await self.hash("dummy-password")).encode("ascii")
        target = hashed.encode("ascii") if hashed is not None else self._dummy
        assert target is not None
        ok = await loop.run_in_executor(self._executor, bcrypt.checkpw, _prehash(password), target)
        return ok and hashed is not None
