"""The poll scheduler's facade: builds the rooms of runs/ once and is what handlers, tests and bench hold.

Why one scheduler and not a kopf timer per resource: at 10,000 objects kopf's timers alone cost a third of a
core, and each timer adds a finalizer (one write per object, and deletes hang while the operator is down).
Here a single heap orders the due polls (due.py); runs of one workspace that fall due together are answered
by one ListPipelineRunsStatus (batching.py, sync.py); every call leaves through the door (pai_access.py);
finished runs leave the heap for good. What is tracked: registry.py; every write: writes.py; an open
circuit: outage.py; workspace scans: scan_feed.py; what a run holds inside (progress, failure, outputs, on a
budget of their own): inside_reads.py, fed by the same watch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from paiflow_operator import metrics
from paiflow_operator.access.policy import ACCESS_REASONS
from paiflow_operator.conditions import Event, find_condition
from paiflow_operator.guards.circuit import CircuitBreaker
from paiflow_operator.pai_access import PaiAccess
from paiflow_operator.replicas.sharding import Ownership, StaticShards
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.inside_reads import InsideReader
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.outage import Outage
from paiflow_operator.runs.registry import Registry
from paiflow_operator.runs.scan_feed import ScanFeed, ScanKey, Scans
from paiflow_operator.runs.sync import Sync
from paiflow_operator.runs.tracked import Key, Tracked
from paiflow_operator.runs.writes import RunWriter, log_events
from paiflow_operator.settings import Settings

__all__ = ["Key", "ScanKey", "Scheduler", "Tracked"]


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        writer: RunWriter,
        *,
        launcher: Launcher | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ownership: Ownership | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.clock, self.rng = clock, rng
        self.ownership: Ownership = ownership or StaticShards(settings.shard_count, settings.shard_index)
        self.breaker = CircuitBreaker(
            settings.circuit_failures,
            settings.circuit_probe_interval.total_seconds(),
            settings.circuit_probe_max.total_seconds(),
            clock,
        )
        self.due = DueQueue(settings, rng)
        scans = Scans(settings, access)
        self.registry = Registry(
            settings,
            self.ownership,
            self.due,
            scans.first_sync_wait,
            launcher,
            clock=clock,
            wallclock=wallclock,
            rng=rng,
        )
        self.runs: dict[Key, Tracked] = self.registry.runs
        self.outage = Outage(self.breaker, self.runs, self.due, clock=clock, rng=rng)
        self.sync = Sync(
            settings,
            access,
            self.registry,
            self.due,
            self.outage,
            writer,
            launcher,
            scans.safety_net,
            clock=clock,
            wallclock=wallclock,
            rng=rng,
        )
        self.registry.restore_conditions = self.sync.restore_conditions
        # The workspace scanner's entry (workspaces/scanner.py).
        self.scans = ScanFeed(
            settings,
            scans,
            self.registry,
            self.due,
            self.sync.take_row,
            self.sync.rows_applied,
            clock=clock,
            rng=rng,
        )
        self.registry.first_row = self.scans.feed_new
        self.writer = writer
        self.inside = InsideReader(
            settings,
            access,
            self.runs.get,
            self._write_inside,
            clock=clock,
            wallclock=wallclock,
            backlog=lambda: len(self.sync.rows),
        )

    async def _write_inside(self, tracked: Tracked, patch: dict[str, Any], events: list[Event]) -> None:
        await self.writer.write_status(tracked, patch)
        log_events(tracked, events, quiet=False)
        await self.writer.post_events(tracked, events)

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Called for every watch event (kopf.on.event)."""
        self.registry.observe(body, event_type)
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        tracked = self.runs.get(key)
        # The watch echoes every status write, so the inside reader hears of each change of a run's status.
        if tracked is not None:
            self.inside.note(tracked)
        else:
            self.inside.forget(key)

    def owns(self, uid: str) -> bool:
        return self.registry.owns(uid)

    def forget(self, key: Key) -> None:
        self.registry.forget(key)
        self.inside.forget(key)

    def rebalance(self) -> list[dict[str, Any]]:
        released = self.registry.rebalance()
        for body in released:
            self.inside.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
        return released

    def recheck_denied(self) -> None:
        """The access policies changed: every run they held back is looked at again at once (spread over a
        second), so it recovers without waiting for its slow retry. Runs still allowed are untouched; runs no
        longer allowed stop at their next call, which the door refuses."""
        now = self.clock()
        for tracked in list(self.runs.values()):
            ready = find_condition(list(tracked.status.get("conditions") or []), "Ready")
            if ready is None or ready.get("reason") not in ACCESS_REASONS or tracked.busy:
                continue
            if tracked.spec.suspend and not tracked.deleting:
                continue
            self.due.schedule(tracked, now + self.rng.uniform(0, 1.0))

    def snapshot(self) -> Iterable[metrics.RunSnapshot]:
        return self.registry.snapshot(lambda run: self.outage.is_held(run, self.sync.circuit(run)))

    async def run(self) -> None:
        self.inside.start()
        await self.sync.run()

    async def stop(self) -> None:
        await self.inside.stop()
        await self.sync.stop()
