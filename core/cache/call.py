"""What the cache knows about one decorated function in one cache (``Plan``), about one call
while it goes through the tiers (``Call``), and the bounds of that path (``Limits``)."""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass
from typing import Any

from core.cache.keys import KeySpace, key_mark, tag_mark
from core.cache.memory import MemoryTier
from core.cache.policy import Policy
from core.cache.redis_tier import Lock, Versions
from core.cache.remote import RemoteTier
from core.cache.stats import FunctionStats

__all__ = ["MISSING", "Call", "Limits", "Missing", "Plan"]


_ORIGIN = uuid.uuid4().hex
_COUNTER = itertools.count()


def _new_origin() -> None:
    global _ORIGIN  # a forked child must not reuse its parent's tokens
    _ORIGIN = uuid.uuid4().hex


os.register_at_fork(after_in_child=_new_origin)


def _token() -> str:
    """A lock token no other call (of any process) holds: this process's random id and a
    counter, without the system call of a ``uuid4`` per call."""
    return f"{_ORIGIN}{next(_COUNTER):x}"


class Missing:
    """Not known yet."""


MISSING = Missing()


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of a cache's read path (``Cache`` tells what each means)."""

    l1_ttl: float
    lock_ttl: float
    lock_wait: float
    max_value_bytes: int
    max_ttl: float


class Plan:
    """The tiers one policy uses in one cache."""

    __slots__ = ("coordinate", "l1_ttl", "memory", "prefix", "remote", "stats")

    def __init__(
        self,
        memory: MemoryTier | None,
        remote: tuple[RemoteTier, ...],
        l1_ttl: float,
        coordinate: bool,
        stats: FunctionStats,
        prefix: str,
    ) -> None:
        self.prefix = prefix  # of the record keys: the namespace and the policy's version
        self.memory = memory
        self.remote = remote
        self.l1_ttl = l1_ttl
        self.coordinate = coordinate
        self.stats = stats


class Call:
    """One call's key and what was learnt about it so far."""

    __slots__ = (
        "args",
        "key",
        "kwargs",
        "lock",
        "locked",
        "marks",
        "plan",
        "policy",
        "record_key",
        "seq",
        "version_keys",
        "versions",
    )

    def __init__(
        self,
        keyspace: KeySpace,
        seq: int,
        policy: Policy[Any],
        plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str | None = None,
    ) -> None:
        self.policy = policy
        self.plan = plan
        self.args = args
        self.kwargs = kwargs
        self.key = policy.keys.key(args, kwargs) if key is None else key
        self.record_key = plan.prefix + self.key
        self.seq = seq
        self.marks: tuple[str, ...] = ()
        self.version_keys: list[str] = []
        # _MISSING: not read yet; None: unknowable (Redis down or absent)
        self.versions: Versions | Missing | None = MISSING
        self.lock: Lock | None = None  # the stampede lock this call may take
        self.locked: bool | None = None  # True: ours, False: another's, None: not tried

    def resolve_marks(self, keyspace: KeySpace) -> None:
        """Compute the call's tags (and their version keys): only a call that missed memory
        needs them."""
        if self.marks:
            return
        tags = self.policy.keys.tags(self.args, self.kwargs)
        self.marks = (key_mark(self.key), *map(tag_mark, tags))
        if self.plan.coordinate:
            self.version_keys = [keyspace.version(mark) for mark in self.marks]

    def prepare_lock(self, keyspace: KeySpace, ttl: float) -> None:
        """Name the stampede lock this call takes, if its policy and tiers want one."""
        if self.plan.coordinate and self.policy.lock and self.lock is None:
            lock_key = keyspace.lock(self.key, self.policy.version)
            self.lock = (lock_key, _token(), ttl)
