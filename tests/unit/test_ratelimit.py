"""The fair share of the PAI call rate and of the calls in flight between tenants, on an injected clock."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from paiflow_operator.guards.ratelimit import FairLimiter, FairSemaphore, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        # Waiting moves the clock by exactly the requested time.
        self.t += seconds
        await asyncio.sleep(0)


async def _take_all(limiter: FairLimiter, clock: Clock, tenants: list[tuple[str, float]]) -> list[tuple[float, str]]:
    """Every (tenant, weight) asks for one token at once; returns (time, tenant) in the order served."""
    served: list[tuple[float, str]] = []

    async def take(tenant: str, weight: float) -> None:
        await limiter.acquire(tenant, weight)
        served.append((clock(), tenant))

    await asyncio.gather(*(take(t, w) for t, w in tenants))
    return served


async def test_the_global_limit_is_the_token_buckets_exactly() -> None:
    clock = Clock()
    rate, burst = 4.0, 3
    limiter = FairLimiter(rate, burst, clock, clock.sleep)
    served = await _take_all(limiter, clock, [("a", 1.0)] * 30 + [("b", 2.0)] * 11)
    stamps = sorted(t for t, _ in served)
    # In every window [t_i, t_j] at most rate * (t_j - t_i) + burst calls start...
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            assert j - i + 1 <= rate * (stamps[j] - stamps[i]) + burst + 1e-9, (i, j)
    assert stamps[:burst] == [0.0] * burst
    # ...and no stricter: 38 calls beyond the burst take 38 / rate seconds.
    assert stamps[-1] == pytest.approx((41 - burst) / rate)
    assert limiter.waiting == 0


async def test_a_flooding_tenant_does_not_hold_another_one_behind_its_queue() -> None:
    clock = Clock()
    fair = FairLimiter(10.0, 1, clock, clock.sleep)
    # 100 of "flood" queue first, then 5 of "quiet".
    served = await _take_all(fair, clock, [("flood", 1.0)] * 100 + [("quiet", 1.0)] * 5)
    order = [tenant for _, tenant in served]
    last_quiet = max(i for i, tenant in enumerate(order) if tenant == "quiet")
    # Served alternately once both wait: the quiet tenant's 5 are done within its first 11 grants.
    assert last_quiet <= 11, order[:15]

    clock_fifo = Clock()
    fifo = TokenBucket(10.0, 1, clock_fifo, clock_fifo.sleep)
    fifo_order: list[str] = []

    async def take(tenant: str) -> None:
        await fifo.acquire(tenant)
        fifo_order.append(tenant)

    await asyncio.gather(*(take(t) for t in ["flood"] * 100 + ["quiet"] * 5))
    # The FIFO bucket (what served every tenant before) serves the quiet tenant last: the comparison can fail.
    assert fifo_order.index("quiet") == 100


async def test_waiting_tenants_are_served_in_proportion_to_their_weights() -> None:
    clock = Clock()
    limiter = FairLimiter(100.0, 1, clock, clock.sleep)
    served = await _take_all(limiter, clock, [("heavy", 3.0)] * 400 + [("light", 1.0)] * 400)
    first = Counter(tenant for _, tenant in served[:200])
    assert first["heavy"] == pytest.approx(150, abs=2) and first["light"] == pytest.approx(50, abs=2)


async def test_an_idle_tenant_earns_no_credit_to_flood_with_later() -> None:
    clock = Clock()
    limiter = FairLimiter(10.0, 1, clock, clock.sleep)
    await _take_all(limiter, clock, [("early", 1.0)] * 50)
    # "late" was idle while "early" took 50: it joins at the current virtual time, not 50 grants behind.
    served = await _take_all(limiter, clock, [("early", 1.0)] * 20 + [("late", 1.0)] * 20)
    order = [tenant for _, tenant in served]
    assert Counter(order[:10]) == Counter({"early": 5, "late": 5}), order[:10]


async def test_a_cancelled_waiter_costs_no_token_and_leaves_the_count() -> None:
    clock = Clock()
    limiter = FairLimiter(1.0, 1, clock, clock.sleep)
    await limiter.acquire("a")  # the burst is spent
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()
        await clock.sleep(seconds)

    limiter._sleep = slow_sleep
    first = asyncio.create_task(limiter.acquire("a"))
    second = asyncio.create_task(limiter.acquire("b"))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    first.cancel()
    gate.set()
    await second
    assert clock() == pytest.approx(1.0), "the token of the cancelled waiter went to the next one"
    assert limiter.waiting == 0


async def test_the_semaphore_holds_its_limit_and_shares_freed_slots_fairly() -> None:
    semaphore = FairSemaphore(2)
    holding = 0
    most = 0
    order: list[str] = []
    release = asyncio.Event()

    async def hold(tenant: str) -> None:
        nonlocal holding, most
        async with semaphore.slot(tenant):
            holding += 1
            most = max(most, holding)
            order.append(tenant)
            await release.wait()
            await asyncio.sleep(0)
            holding -= 1

    tasks = [asyncio.create_task(hold(t)) for t in ["flood"] * 30 + ["quiet"] * 3]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert most == 2
    assert max(i for i, tenant in enumerate(order) if tenant == "quiet") <= 8, order


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    semaphore = FairSemaphore(1)
    await semaphore.acquire("a")
    waiter = asyncio.create_task(semaphore.acquire("b"))
    other = asyncio.create_task(semaphore.acquire("c"))
    await asyncio.sleep(0)
    semaphore.release()  # to "b"...
    waiter.cancel()  # ...cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(other, 1)
