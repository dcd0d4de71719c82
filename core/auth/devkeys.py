"""DEVELOPMENT-ONLY Ed25519 key pair for JWTs.

This key is public (it is in the repository) and exists so that a fresh clone runs with no setup.
Settings refuse it when ``AIOSHOP_ENV=production``; set ``JWT_PRIVATE_KEY`` and ``JWT_PUBLIC_KEY``
(PEM) for anything real. Generate a pair with ``aioshop keygen``.
"""

DEV_PRIVATE_KEY = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHbk9L6uGN0kR5vKvM+GF7w+J2McnFcA1xKriomcWCQN
-----END PRIVATE KEY-----
"""  # DEVELOPMENT DEFAULT, NOT A SECRET

DEV_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAjl69nrhJu2yOtzH1a88GXVwuJx1RHCai8nmcOjzj0fg=
-----END PUBLIC KEY-----
"""
