"""The global PAI call rate limit: one token bucket shared by every call the operator makes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """At most `rate` calls per second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated = clock()
        self._lock = asyncio.Lock()
        self.waiting = 0  # callers queued for a token: polls that are due but held back by the limit

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
        """Waits for one token. ``tenant`` and ``weight`` are a fair limiter's arguments; one global bucket
        treats every caller alike."""
        # The lock makes waiters queue in order, so the limit holds however many tasks wait.
        self.waiting += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
                    self._updated = now
                    if self._tokens >= 1:
                        self._tokens -= 1
                        return
                    await asyncio.sleep((1 - self._tokens) / self._rate)
        finally:
            self.waiting -= 1
