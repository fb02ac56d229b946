"""Which replica polls which run: each run (by uid) belongs to exactly one replica."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import Protocol


class Ownership(Protocol):
    def owns(self, uid: str) -> bool: ...


class KeyOwnership(Ownership, Protocol):
    """Also owns work by any key (a workspace id, a run to create), with the same replica split as runs."""

    def owns_key(self, key: str) -> bool: ...


class StaticShards:
    """Fixed shards from settings (PAIFLOW_SHARD_COUNT/INDEX): a pure function of the uid, so every replica
    agrees without talking to the others."""

    def __init__(self, count: int = 1, index: int = 0) -> None:
        if not 0 <= index < count:
            raise ValueError("shard index must lie in [0, count)")
        self.count = count
        self.index = index

    def owns(self, uid: str) -> bool:
        return self.count == 1 or zlib.crc32(uid.encode()) % self.count == self.index

    def owns_key(self, key: str) -> bool:
        return self.owns(key)


def _weight(member: str, key: str) -> int:
    # blake2b, not hash(): the same on every replica and every Python process (hash() is salted).
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for `key` (rendezvous / highest-random-weight hashing).

    When a member leaves, only the keys it owned move (each to the member with its next-highest weight);
    when one joins, it takes about 1/n of the keys, from every other member alike. Ties (64-bit) are broken
    by the member's name, so every replica that sees the same members picks the same owner.
    """
    return max(members, key=lambda member: (_weight(member, key), member), default=None)
