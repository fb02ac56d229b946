"""Events of runs after the status writes in flight: statuses first, each resource's Events in order, none lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from paiflow_operator.conditions import Event
from paiflow_operator.kube import ObjectRef
from paiflow_operator.runs.events import EventQueue

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Kube:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None:
        await asyncio.sleep(0)
        self.posted.append((ref.name, event.reason))


def ref(name: str) -> ObjectRef:
    return ObjectRef("ml", name, f"uid-{name}", "1")


async def spin(turns: int = 200) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until_posted(kube: Kube, within: float) -> None:
    """Until something is posted, for at most ``within`` seconds."""
    for _ in range(int(within / 0.01)):
        if kube.posted:
            return
        await asyncio.sleep(0.01)


async def test_events_wait_while_status_writes_are_in_flight_then_go_in_order() -> None:
    kube, in_flight = Kube(), [3]
    queue = EventQueue(kube, lambda: in_flight[0], workers=3, max_delay=3600)
    queue.start()
    for i in range(30):
        await queue.post(ref(f"r{i % 5}"), [Event("Normal", f"E{i}", "m")], NOW)
    await spin()
    assert kube.posted == []  # the burst's statuses are still being written
    in_flight[0] = 0
    queue.writes_settled()
    await queue.stop(flush=5)
    assert len(kube.posted) == 30
    for name in {n for n, _ in kube.posted}:
        mine = [int(reason[1:]) for n, reason in kube.posted if n == name]
        assert mine == sorted(mine)  # each resource's Events in the order they happened


async def test_a_full_queue_makes_the_poster_wait_and_loses_nothing() -> None:
    kube, in_flight = Kube(), [1]
    queue = EventQueue(kube, lambda: in_flight[0], workers=2, max_pending=4, max_delay=3600)
    queue.start()
    posters = [asyncio.create_task(queue.post(ref(f"r{i}"), [Event("Normal", "Ended", "m")], NOW)) for i in range(10)]
    await spin()
    assert queue.pending <= 4 and sum(t.done() for t in posters) <= 4
    in_flight[0] = 0
    queue.writes_settled()
    await asyncio.gather(*posters)
    await queue.stop(flush=5)
    assert sorted(kube.posted) == sorted((f"r{i}", "Ended") for i in range(10))


async def test_a_steady_stream_of_writes_does_not_hold_events_past_their_max_delay() -> None:
    kube = Kube()
    queue = EventQueue(kube, lambda: 1, workers=1, max_delay=0.05)  # writes never settle
    queue.start()
    await queue.post(ref("r"), [Event("Normal", "Ended", "m")], NOW)
    await until_posted(kube, 2.0)
    assert kube.posted == [("r", "Ended")]
    await queue.stop(flush=1)


async def test_after_a_wave_of_writes_events_wait_for_them_to_stay_settled_not_for_a_gap_between_waves() -> None:
    kube, in_flight = Kube(), [1]
    queue = EventQueue(kube, lambda: in_flight[0], workers=1, max_delay=3600, settle=1.0, wave=50)
    queue.start()
    await queue.post(ref("r"), [Event("Normal", "Ended", "m")], NOW)
    in_flight[0] = 0
    queue.writes_settled(300)  # one workspace scan's rows are written...
    await asyncio.sleep(0.1)
    assert kube.posted == []
    in_flight[0] = 1  # ...and the next scan's come
    await asyncio.sleep(0.2)
    assert kube.posted == []
    in_flight[0] = 0
    queue.writes_settled(300)
    settled = asyncio.get_running_loop().time()
    await until_posted(kube, 6.0)
    assert kube.posted == [("r", "Ended")]
    assert asyncio.get_running_loop().time() - settled >= 0.9
    await queue.stop(flush=1)


async def test_in_a_trickle_of_writes_events_go_as_soon_as_none_is_in_flight() -> None:
    kube, in_flight = Kube(), [1]
    queue = EventQueue(kube, lambda: in_flight[0], workers=1, max_delay=3600, settle=5.0, wave=50)
    queue.start()
    await queue.post(ref("r"), [Event("Normal", "Ended", "m")], NOW)
    await spin()
    assert kube.posted == []
    in_flight[0] = 0
    queue.writes_settled(2)  # a steady state's few writes: no burst to make way for
    await until_posted(kube, 1.0)
    assert kube.posted == [("r", "Ended")]
    await queue.stop(flush=1)
