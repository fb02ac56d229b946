"""Events of runs posted after the status writes they follow: statuses first during a burst.

A mass finish (thousands of runs ending at once) used to post each run's Event right after its status write,
so half the API server's write capacity went to Events while changed statuses waited. Here Events wait in a
bounded queue while status writes are in flight and go out once the statuses are written; after a wave of
writes (a burst's come in waves, one workspace scan's rows at a time, with moments between two waves when none
is in flight) they wait for the writes to stay settled for `settle` seconds, while in a steady trickle of
writes they go as soon as none is in flight. They are still
posted, each resource's in order (one worker per hash of the resource), and none is dropped: a full queue
makes the poster wait for room (bounded memory), and an Event that waited longer than `max_delay` goes out
even while writes continue, so a steady stream of writes never starves them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from paiflow_operator import metrics
from paiflow_operator.conditions import Event
from paiflow_operator.kube import ObjectRef

log = logging.getLogger(__name__)


class EventKube(Protocol):
    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None: ...


class EventQueue:
    def __init__(
        self,
        kube: EventKube,
        writes_in_flight: Callable[[], int],
        *,
        workers: int = 4,
        max_pending: int = 20_000,
        # Longer than a burst's writes take: a first sync of 10,000 runs writes for about a minute, and Events
        # released meanwhile compete with its last statuses for the API server.
        max_delay: float = 120.0,
        settle: float = 1.0,
        wave: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.writes_in_flight = writes_in_flight
        self.max_pending = max_pending
        self.max_delay = max_delay
        self.settle = settle
        self.wave = wave  # writes between two settled moments that make a burst's wave
        self.clock = clock
        self._settled_at = float("-inf")
        self._last_wave = 0
        self._flushing = False
        # (enqueued at, object, Event, its time): one FIFO per worker, chosen by the object, keeps its order.
        self._queues: list[collections.deque[tuple[float, ObjectRef, Event, datetime]]] = [
            collections.deque() for _ in range(workers)
        ]
        self._ready = [asyncio.Event() for _ in range(workers)]
        self._room = asyncio.Event()
        self._room.set()
        self._quiet = asyncio.Event()  # set by the writer whenever its last in-flight status write ends
        self._posting = 0
        self._empty = asyncio.Event()  # nothing queued, nothing being posted
        self._empty.set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(self._work(i)) for i in range(len(self._queues))]

    def writes_settled(self, wave: int = 0) -> None:
        """The writer's in-flight status writes reached zero after ``wave`` writes: Events held for them may go
        (after a burst's wave, once it stays so for ``settle`` seconds)."""
        self._settled_at = self.clock()
        self._last_wave = wave
        self._quiet.set()

    def _hold(self, waited: float) -> float:
        """Seconds the oldest queued Event, queued ``waited`` seconds ago, is held yet (0: post it now)."""
        if self._flushing or waited >= self.max_delay:
            return 0.0
        if self.writes_in_flight() > 0:
            return min(1.0, self.max_delay - waited)
        calm = self.clock() - self._settled_at
        if self._last_wave >= self.wave and calm < self.settle:
            return min(self.settle - calm, self.max_delay - waited)
        return 0.0

    async def post(self, ref: ObjectRef, events: list[Event], now: datetime) -> None:
        if not events:
            return
        while self.pending >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        self._empty.clear()
        index = zlib.crc32(f"{ref.namespace}/{ref.name}".encode()) % len(self._queues)
        for event in events:
            self._queues[index].append((self.clock(), ref, event, now))
        self._ready[index].set()

    async def _work(self, index: int) -> None:
        queue, ready = self._queues[index], self._ready[index]
        while True:
            if not queue:
                ready.clear()
                await ready.wait()
                continue
            enqueued, ref, event, at = queue[0]
            hold = self._hold(self.clock() - enqueued)
            if hold > 0:
                # Statuses first: wait until the writes in flight are done (and, after a wave, stay so), or this
                # Event is due anyway.
                self._quiet.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._quiet.wait(), hold)
                continue
            queue.popleft()
            if self.pending < self.max_pending:
                self._room.set()
            self._posting += 1
            try:
                await self.kube.create_event(ref, event, at)
                metrics.KUBE_WRITES.labels("event").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event for %s/%s not posted: %s", ref.namespace, ref.name, exc)
            finally:
                self._posting -= 1
                if not self._posting and not self.pending:
                    self._empty.set()

    async def stop(self, flush: float = 5.0) -> None:
        """Posts what is queued for at most ``flush`` seconds (the writes are over by then), then stops."""
        self._flushing = True
        self.writes_settled()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), flush)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
