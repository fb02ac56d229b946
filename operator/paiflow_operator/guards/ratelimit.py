"""The PAI call rate limit: a token bucket, and the fair share of it (and of the calls in flight) per tenant."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MIN_WEIGHT = 1e-3  # a weight of 0 would never be served; the policy's CRD asks for > 0 anyway
# A refill after sleeping exactly the missing time may come out a rounding error short of a whole token; a
# further sleep of 1e-17 s would not move the clock at all.
EPSILON = 1e-9


class TokenBucket:
    """At most `rate` calls per second on average, `burst` at once; waiters served first come, first served."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
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
                    if self._tokens >= 1 - EPSILON:
                        self._tokens -= 1
                        return
                    await (self._sleep or asyncio.sleep)((1 - self._tokens) / self._rate)
        finally:
            self.waiting -= 1


@dataclass(slots=True)
class _Tenant:
    weight: float = 1.0
    # Stride scheduling's pass: virtual time at which this tenant's next grant starts. Each grant moves it by
    # 1 / weight, so tenants that all wait are served in proportion to their weights.
    pass_: float = 0.0
    queue: deque[asyncio.Future[None]] = field(default_factory=deque)


class FairQueue:
    """Per-tenant FIFO queues served in weighted round robin (stride scheduling / start-time fair queuing).

    A tenant that starts waiting joins at the current virtual time, so being idle earns no credit to flood with
    later; one that is ahead (it took much just before) keeps its lead. Pure bookkeeping: the users decide when
    there is something to grant.
    """

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}
        self._ready: list[tuple[float, int, str]] = []  # (pass, arrival order, tenant) of tenants with waiters
        self._order = itertools.count()
        self._vtime = 0.0
        self.queued = 0  # futures in the queues, cancelled ones included until they are skipped

    def enqueue(self, tenant: str, weight: float) -> asyncio.Future[None]:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        state.weight = max(weight, MIN_WEIGHT)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not state.queue:
            state.pass_ = max(state.pass_, self._vtime)
            heapq.heappush(self._ready, (state.pass_, next(self._order), tenant))
        state.queue.append(future)
        self.queued += 1
        return future

    def next_waiter(self) -> asyncio.Future[None] | None:
        """The waiter to serve next (removed from its queue), skipping cancelled ones; None if nobody waits."""
        while self._ready:
            start, _, name = heapq.heappop(self._ready)
            state = self._tenants[name]
            future = state.queue.popleft()
            self.queued -= 1
            if not future.cancelled():
                self._vtime = start
                state.pass_ = start + 1.0 / state.weight
            if state.queue:
                heapq.heappush(self._ready, (state.pass_, next(self._order), name))
            elif state.pass_ <= self._vtime:
                del self._tenants[name]  # nothing to remember: it would join at the virtual time anyway
            if not future.cancelled():
                return future
        return None


class FairLimiter:
    """The token bucket's limit exactly (`rate` per second, `burst` at once), with the waiters of each tenant
    (a namespace) served their weighted share of it instead of first come, first served: one namespace with a
    thousand due polls does not hold another's few behind them."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._queue = FairQueue()
        self._dispatcher: asyncio.Task[None] | None = None
        self.waiting = 0  # callers queued for a token: polls that are due but held back by the limit

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
        self._refill()
        if not self._queue.queued and self._tokens >= 1 - EPSILON:
            self._tokens -= 1
            return
        self.waiting += 1
        try:
            future = self._queue.enqueue(tenant, weight)
            if self._dispatcher is None or self._dispatcher.done():
                self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
            await future
        finally:
            self.waiting -= 1

    async def _dispatch(self) -> None:
        """Hands out tokens one by one, at the bucket's pace, to the waiter FairQueue picks."""
        while self._queue.queued:
            self._refill()
            if self._tokens < 1 - EPSILON:
                await self._sleep((1 - self._tokens) / self._rate)
                continue
            future = self._queue.next_waiter()
            if future is None:
                return
            self._tokens -= 1
            future.set_result(None)


class FairSemaphore:
    """At most `limit` holders; waiters of each tenant get their weighted share of the slots that free up.

    The calls in flight are the other queue a flood fills: with a FIFO semaphore in front of a fair limiter, a
    thousand due polls of one namespace would take every slot and the queue behind them."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._queue = FairQueue()

    async def acquire(self, tenant: str = "", weight: float = 1.0) -> None:
        if self._free > 0 and not self._queue.queued:
            self._free -= 1
            return
        future = self._queue.enqueue(tenant, weight)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot at the moment it was cancelled: pass it on
            raise

    def release(self) -> None:
        future = self._queue.next_waiter()
        if future is None:
            self._free += 1
        else:
            future.set_result(None)  # the slot goes straight to the next waiter

    def slot(self, tenant: str = "", weight: float = 1.0) -> _Slot:
        return _Slot(self, tenant, weight)


class _Slot:
    def __init__(self, semaphore: FairSemaphore, tenant: str, weight: float) -> None:
        self._semaphore, self._tenant, self._weight = semaphore, tenant, weight

    async def __aenter__(self) -> None:
        await self._semaphore.acquire(self._tenant, self._weight)

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()
