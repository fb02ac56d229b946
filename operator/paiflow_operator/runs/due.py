"""What is due: the heap of next polls, the loop's wake-up, and Retry -> the next due time.

The only writer of Tracked.due and heap_version (and of attempt, but for its resets). A heap entry is (due,
heap_version, key); bumping a run's heap_version voids every entry it has in the heap, so nothing is ever
removed from the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from collections.abc import Callable, Mapping
from typing import Any

from paiflow_operator.runs import batching
from paiflow_operator.runs.reconcile import Retry, backoff_delay
from paiflow_operator.runs.tracked import Key, Tracked
from paiflow_operator.settings import Settings


class DueQueue:
    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self._heap: list[tuple[float, int, Key]] = []
        self.wake = asyncio.Event()

    def schedule(self, tracked: Tracked, due: float | None) -> None:
        """Polls the run at ``due`` (None: not at all), replacing any earlier due time."""
        tracked.heap_version += 1
        tracked.due = due
        if due is not None:
            heapq.heappush(self._heap, (due, tracked.heap_version, tracked.key))
            if self._heap[0][2] == tracked.key:
                self.wake.set()

    def void(self, tracked: Tracked) -> None:
        """Takes the run out of the heap (held by an open circuit, or answered by a scan row)."""
        tracked.due = None
        tracked.heap_version += 1

    @staticmethod
    def taken(tracked: Tracked) -> None:
        """The run's popped entry is being acted on now: it has no due time until it is rescheduled."""
        tracked.due = None

    def pop_due(self, now: float, runs: Mapping[Key, Tracked]) -> list[Tracked]:
        due: list[Tracked] = []
        while self._heap and self._heap[0][0] <= now:
            _, version, key = heapq.heappop(self._heap)
            tracked = runs.get(key)
            if tracked is None or tracked.heap_version != version or tracked.busy:
                continue
            due.append(tracked)
        return due

    def pop_batchable(
        self,
        horizon: float,
        keys: set[Any],
        runs: Mapping[Key, Tracked],
        batch_key: Callable[[Tracked], Any],
    ) -> list[Tracked]:
        """Pulls in what falls due before ``horizon`` and shares a batch key with what is due now."""
        keys.discard(None)
        if not keys:
            return []
        early: list[Tracked] = []
        keep: list[tuple[float, int, Key]] = []
        while self._heap and self._heap[0][0] <= horizon:
            entry = heapq.heappop(self._heap)
            tracked = runs.get(entry[2])
            if tracked is None or tracked.heap_version != entry[1] or tracked.busy:
                continue
            if batch_key(tracked) in keys:
                early.append(tracked)
            else:
                keep.append(entry)
        for entry in keep:
            heapq.heappush(self._heap, entry)
        return early

    async def sleep(self, now: float) -> None:
        """Until the next entry falls due or someone schedules an earlier one."""
        self.wake.clear()
        timeout = self._heap[0][0] - now if self._heap else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    def after(self, tracked: Tracked, retry: Retry, now: float, *, interval: float = 0.0, beat: Any = None) -> None:
        """Retry -> the next due time: a poll interval (on the batch's beat when it has one, ``beat``), a slow
        retry, or capped exponential backoff."""
        s = self.settings
        if retry is Retry.INTERVAL:
            tracked.attempt = 0
            if beat is not None:
                self.schedule(tracked, batching.next_beat(beat, interval, now))
                return
            delay = interval
        elif retry is Retry.SLOW:
            tracked.attempt += 1
            delay = s.slow_retry_interval.total_seconds()
        else:
            tracked.attempt += 1
            delay = backoff_delay(tracked.attempt, s.backoff_base, s.backoff_max).total_seconds()
        # Retries land anywhere in [delay/2, delay] (no synchronised retry storms); a run polled alone moves by
        # +-5% so that runs created together drift apart.
        if retry is Retry.INTERVAL:
            delay *= self.rng.uniform(0.95, 1.05)
        else:
            delay = self.rng.uniform(delay / 2, delay)
        self.schedule(tracked, now + delay)
