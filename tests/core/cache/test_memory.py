"""The in-process tier: LRU by entries and bytes, expiry, marks."""

import pytest

from core.cache.memory import MemoryTier
from core.cache.serialize import Record

pytestmark = pytest.mark.unit


def record(payload: bytes = b'"x"') -> Record:
    return Record(payload, 0.0, 100.0, 0.0, None)


def test_the_least_recently_used_entry_goes_first() -> None:
    evicted: list[str] = []
    tier = MemoryTier(max_entries=2, max_bytes=1_000_000, on_evict=evicted.append)
    tier.set("a", record(), expires_at=10, owner="f")
    tier.set("b", record(), expires_at=10, owner="g")
    assert tier.get("a", now=0) is not None  # a is now the most recent
    tier.set("c", record(), expires_at=10, owner="h")
    assert "b" not in tier
    assert "a" in tier
    assert "c" in tier
    assert evicted == ["g"]


def test_the_byte_bound_holds() -> None:
    tier = MemoryTier(max_entries=1000, max_bytes=4000)
    for index in range(20):
        tier.set(f"k{index}", record(b"x" * 500), expires_at=10, owner="f")
        assert tier.size_bytes <= 4000
    assert 0 < len(tier) < 20
    assert "k19" in tier


def test_an_entry_larger_than_the_bound_is_not_stored() -> None:
    tier = MemoryTier(max_entries=10, max_bytes=1000)
    assert tier.set("big", record(b"x" * 2000), expires_at=10, owner="f") is False
    assert len(tier) == 0
    assert tier.size_bytes == 0


def test_an_expired_entry_is_gone() -> None:
    tier = MemoryTier(max_entries=10, max_bytes=100_000)
    tier.set("a", record(), expires_at=5, owner="f")
    assert tier.get("a", now=4.9) is not None
    assert tier.get("a", now=5.0) is None
    assert len(tier) == 0
    assert tier.size_bytes == 0


def test_replacing_an_entry_keeps_the_accounting_right() -> None:
    tier = MemoryTier(max_entries=10, max_bytes=100_000)
    tier.set("a", record(b"x" * 100), expires_at=5, owner="f", marks=("t:1",))
    tier.set("a", record(b"x" * 10), expires_at=5, owner="f", marks=("t:2",))
    assert len(tier) == 1
    assert tier.drop_marks(["t:1"]) == 0
    assert tier.drop_marks(["t:2"]) == 1
    assert tier.size_bytes == 0


def test_dropping_a_mark_drops_every_entry_carrying_it() -> None:
    tier = MemoryTier(max_entries=10, max_bytes=100_000)
    tier.set("p1", record(), expires_at=10, owner="f", marks=("k:p1", "t:products"))
    tier.set("p2", record(), expires_at=10, owner="f", marks=("k:p2", "t:products"))
    tier.set("c1", record(), expires_at=10, owner="f", marks=("k:c1",))
    assert tier.drop_marks(["k:p1"]) == 1
    assert "p2" in tier
    assert tier.drop_marks(["t:products"]) == 1
    assert "p2" not in tier
    assert "c1" in tier
    tier.delete("c1")
    assert tier.size_bytes == 0
