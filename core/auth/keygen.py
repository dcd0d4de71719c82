"""Make the JWT key pair once, as files: ``python -m core.auth.keygen PRIVATE_PEM PUBLIC_PEM``.

The one-shot ``keygen`` service of ``docker-compose.yml`` runs it on every ``up``: the first run
writes a new Ed25519 pair (the private key readable by its owner only), later runs find it and
change nothing. Each file is written under a temporary name and renamed, so a crash never leaves
half a key. A private key without its public key gets the public key derived again; a public key
without its private key is an error (the pair cannot be recovered: delete it to start over).
Exit status: 0 (written or present), 1 (an error, one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["build_parser", "ensure_key_files", "generate_key_pair", "main", "public_pem"]


def generate_key_pair() -> tuple[str, str]:
    """A new Ed25519 pair as PEM text: (PKCS#8 private key, SubjectPublicKeyInfo public key)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return private, public_pem(private)


def public_pem(private_pem: str) -> str:
    """The PEM public key of the PEM private key ``private_pem``."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _write(path: Path, text: str, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def ensure_key_files(private_path: Path, public_path: Path) -> bool:
    """Write a new pair to the two paths unless the private key exists; ``True`` if written.

    Raises ``FileExistsError`` if only the public key exists and ``ValueError`` if the private
    key file is not a PEM private key.
    """
    if private_path.exists():
        private = private_path.read_text(encoding="utf-8")
        if not public_path.exists():
            _write(public_path, public_pem(private), 0o644)
        return False
    if public_path.exists():
        raise FileExistsError(
            f"{public_path} exists without its private key {private_path}: delete it to make a "
            "new pair (every token signed with the old key stops working)"
        )
    private, public = generate_key_pair()
    _write(private_path, private, 0o600)
    _write(public_path, public, 0o644)
    return True


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m core.auth.keygen``."""
    parser = argparse.ArgumentParser(prog="python -m core.auth.keygen", description=__doc__)
    parser.add_argument("private", type=Path, help="the private key's PEM file (mode 0600)")
    parser.add_argument("public", type=Path, help="the public key's PEM file (mode 0644)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, make the pair if missing and say what happened on stderr."""
    args = build_parser().parse_args(argv)
    try:
        written = ensure_key_files(args.private, args.public)
    except (OSError, ValueError) as exc:
        print(f"keygen: {exc}", file=sys.stderr)
        return 1
    print(
        f"keygen: {'wrote a new' if written else 'kept the existing'} key pair "
        f"{args.private} {args.public}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
