"""Which replica polls which run: each run (by uid) belongs to exactly one replica."""

from __future__ import annotations

import zlib
from typing import Protocol


class Ownership(Protocol):
    def owns(self, uid: str) -> bool: ...


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
