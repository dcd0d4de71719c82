"""DEVELOPMENT-ONLY Ed25519 key pair for JWTs.

This key is public (it is in the repository) and exists so that a fresh clone runs with no setup:
anyone can sign tokens that a process using it accepts, admin tokens included. Settings
(``core.settings``) therefore refuse it with ``AIOSHOP_ENV=production``, and in a process that
listens on anything but a loopback address unless ``AIOSHOP_ENV=development`` is set explicitly.
For anything real set ``JWT_PRIVATE_KEY``/``JWT_PUBLIC_KEY`` (PEM) or ``JWT_PRIVATE_KEY_FILE``/
``JWT_PUBLIC_KEY_FILE``; make a pair with ``aioshop keygen`` or ``python -m core.auth.keygen``.
"""

__all__ = ["DEV_PRIVATE_KEY", "DEV_PUBLIC_KEY"]

DEV_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHbk9L6uGN0kR5vKvM+GF7w+J2McnFcA1xKriomcWCQN
-----END PRIVATE KEY-----
"""  # DEVELOPMENT DEFAULT, NOT A SECRET

DEV_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAjl69nrhJu2yOtzH1a88GXVwuJx1RHCai8nmcOjzj0fg=
-----END PUBLIC KEY-----
"""
