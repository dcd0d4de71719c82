"""core.auth.passwords: bcrypt off the loop, with a pre-hash for long passwords."""

import pytest

from core.auth import PasswordHasher

pytestmark = pytest.mark.unit


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4)


async def test_verify_accepts_the_password_and_refuses_others(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse battery")
    assert hashed.startswith("$2b$04$")
    assert "correct horse" not in hashed
    assert await hasher.verify("correct horse battery", hashed) is True
    assert await hasher.verify("correct horse batterY", hashed) is False
    assert await hasher.verify("", hashed) is False


async def test_hashes_are_salted(hasher: PasswordHasher) -> None:
    first = await hasher.hash("same password")
    second = await hasher.hash("same password")
    assert first != second
    assert await hasher.verify("same password", first)
    assert await hasher.verify("same password", second)


async def test_a_long_non_ascii_password_works_in_full(hasher: PasswordHasher) -> None:
    password = ("пароль-🔑-" * 20)[:128]
    assert len(password) == 128
    assert len(password.encode()) > 72  # past what bcrypt reads by itself
    hashed = await hasher.hash(password)
    assert await hasher.verify(password, hashed) is True
    # Differs only in its last character, far beyond bcrypt's 72 bytes.
    assert await hasher.verify(password[:-1] + "x", hashed) is False


async def test_verify_against_no_hash_is_false(hasher: PasswordHasher) -> None:
    assert await hasher.verify("anything", None) is False
    assert await hasher.verify("dummy-password", None) is False
