"""Stable stand-ins for names and ids in the dashboard's public view.

A keyed hash (HMAC-SHA256) of the value, the key random per process, so that a pseudonym
cannot be reversed and does not outlive the process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["Pseudonyms"]


class Pseudonyms:
    """Keyed hashes of values, the key drawn at random when this is made."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, value: str, prefix: str = "i-") -> str:
        """A stable stand-in for ``value`` (an instance name, an order id) in public views."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return prefix + digest[:8]
