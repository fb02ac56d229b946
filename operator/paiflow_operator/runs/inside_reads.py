"""What a run holds inside, read from PAI on a budget of its own: progress of active runs at a slower cadence
than their status, failure details or outputs once when a run ends (runs/inside.py says what to write).

Priced calls (GetPipelineRunNode, ListPipelineRunNodeLogs, ListPipelineRunNodeOutputs) leave through the door
as Action.INSPECT, which takes a token of their own budget (settings.inside_qps_share of qps) before the global
one: however many runs are active, these reads never take more than their share, and status polling keeps the
rest. A few workers pick, each time budget allows, the read most overdue: end reads first (they happen once),
then the stalest progress. So at N runs the calls per interval stay at the budget, and what grows with N is
the progress's age, which ``oldest_progress_age`` reports.

Never for runs that do not want it: ``wants`` is spec.inside (a PaiWorkspace sets it false on the runs it
imports unless its template asks), else the operator's default, settings.inside. A read that fails is tried
again later; it never touches the run's conditions, which status polling owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from paiflow_operator.conditions import Event
from paiflow_operator.pai.errors import PaiError
from paiflow_operator.pai.models import RunStatus
from paiflow_operator.pai_access import Action, PaiAccess
from paiflow_operator.runs import inside
from paiflow_operator.runs.tracked import Key, Tracked, caller
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)

Lookup = Callable[[Key], Tracked | None]
# Writes a status patch and posts Events for a run, through the runs' one status writer.
Writer = Callable[[Tracked, dict[str, Any], list[Event]], Awaitable[None]]

END, PROGRESS = 0, 1  # read kinds, in order of priority
MAX_END_ATTEMPTS = 5
BACKLOG_POLL = 0.5  # seconds between two looks at the status backlog while it holds the reads
REASON_NODE_FAILED = "NodeFailed"
ACTIVE = frozenset({RunStatus.RUNNING, RunStatus.SUSPENDED, RunStatus.TERMINATING})


def wants(tracked: Tracked, default: bool = True) -> bool:
    """spec.inside, else the operator's default (settings.inside); a PaiWorkspace writes false on what it imports
    unless its template asks."""
    return tracked.spec.inside if tracked.spec.inside is not None else default


def final(status: Mapping[str, Any]) -> bool:
    """The end read is done (written with the run's end), also as seen after a restart."""
    return bool((status.get("nodes") or {}).get("final"))


def read_kind(tracked: Tracked, default: bool = True) -> int | None:
    status = tracked.status
    if not wants(tracked, default) or not tracked.run_id or tracked.deleting:
        return None
    raw = status.get("runStatus")
    try:
        run_status = RunStatus(raw) if raw else None
    except ValueError:
        run_status = RunStatus.UNRECOGNIZED
    if run_status is None:
        return None
    if run_status.is_terminal:
        # The end read needs the status of this generation written first (its nodeId, its end).
        return None if final(status) else END
    return PROGRESS if run_status in ACTIVE else None


class InsideReader:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        lookup: Lookup,
        write: Writer,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 2,
        backlog: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.access = access
        self.lookup = lookup
        self.write = write
        self.clock = clock
        self.wallclock = wallclock
        self.workers = workers
        # Status writes still to come (a scan's rows waiting for their turn): reads wait for them.
        self.backlog = backlog
        self.interval = settings.progress_interval.total_seconds()
        self._heap: list[tuple[int, float, int, Key]] = []
        self._queued: dict[Key, tuple[int, float]] = {}
        self._last_read: dict[Key, float] = {}
        self._attempts: dict[Key, int] = {}
        self._in_flight: set[Key] = set()
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.calls = 0  # priced calls sent (for the bench)

    # ---- intake: the runs' sync tells us what it saw --------------------------------------------------------

    def note(self, tracked: Tracked) -> None:
        """Called after a run's status was observed or written: queue what it now needs, or forget it."""
        kind = read_kind(tracked, self.settings.inside)
        key = tracked.key
        if kind is None:
            self.forget(key)
            return
        last = self._last_read.get(key)
        due = self.clock() if kind == END or last is None else last + self.interval
        self._queue(key, kind, due)

    def _queue(self, key: Key, kind: int, due: float) -> None:
        queued = self._queued.get(key)
        if queued is not None and queued <= (kind, due):
            return  # already queued as urgent or more (an end read is never displaced by progress)
        self._push(key, kind, due)

    def forget(self, key: Key) -> None:
        self._queued.pop(key, None)
        self._last_read.pop(key, None)
        self._attempts.pop(key, None)

    def _push(self, key: Key, kind: int, due: float) -> None:
        self._queued[key] = (kind, due)
        heapq.heappush(self._heap, (kind, due, next(self._seq), key))
        self._wake.set()

    def oldest_progress_age(self) -> float | None:
        """Seconds since the stalest progress of an active run was read (None: nothing active read yet)."""
        now = self.clock()
        ages = [
            now - self._last_read[k]
            for k, (kind, _) in self._queued.items()
            if kind == PROGRESS and k in self._last_read
        ]
        return max(ages) if ages else None

    # ---- the workers ---------------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"inside-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _next(self) -> tuple[Key, int] | float | None:
        """The most urgent read that is due (end reads before progress), else seconds until one is."""
        now = self.clock()
        deferred: list[tuple[int, float, int, Key]] = []
        found: tuple[Key, int] | None = None
        soonest: float | None = None
        while self._heap:
            kind, due, seq, key = heapq.heappop(self._heap)
            if self._queued.get(key) != (kind, due) or key in self._in_flight:
                if key in self._in_flight and self._queued.get(key) == (kind, due):
                    deferred.append((kind, due, seq, key))
                continue  # superseded
            if due > now:
                deferred.append((kind, due, seq, key))
                soonest = due if soonest is None else min(soonest, due)
                if kind == PROGRESS:
                    break  # everything after this in the heap is progress, due later
                continue
            found = (key, kind)
            del self._queued[key]
            break
        for item in deferred:
            heapq.heappush(self._heap, item)
        if found is not None:
            return found
        return None if soonest is None else max(0.0, soonest - now)

    async def _work(self) -> None:
        while True:
            if self.backlog():
                # Statuses first: while a burst's rows wait for their writes, a read's write and Events would
                # queue among them, and its priced calls go on runs whose end is not shown yet (measured at
                # 10,000 runs: 515 reads and their writes inside a first sync that needs none of them).
                await asyncio.sleep(BACKLOG_POLL)
                continue
            picked = self._next()
            if not isinstance(picked, tuple):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=picked if picked is not None else 60.0)
                continue
            key, kind = picked
            tracked = self.lookup(key)
            if tracked is None:
                continue
            if read_kind(tracked, self.settings.inside) != kind:
                self.note(tracked)  # it needs another read now (or none): queue that, never drop it
                continue
            self._in_flight.add(key)
            try:
                await self._read(tracked, kind)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a write that failed, a bug: never the end of the loop
                log.warning("inside read of %s/%s failed: %s", key[0], key[1], type(exc).__name__)
                self._retry(tracked, kind)
            finally:
                self._in_flight.discard(key)

    def _retry(self, tracked: Tracked, kind: int) -> None:
        key = tracked.key
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        if kind == END and attempts >= MAX_END_ATTEMPTS:
            return  # given up; the run keeps its last progress (a restart tries again)
        self._queue(key, kind, self.clock() + min(self.interval, 5.0 * 2**attempts))

    async def _read(self, tracked: Tracked, kind: int) -> None:
        key = tracked.key
        node_id = tracked.status.get("nodeId")
        if not node_id:
            self._last_read[key] = self.clock()
            return
        who = caller(tracked, Action.INSPECT, self.access.region(tracked.spec.regionId))
        run_id = tracked.run_id
        try:
            self.calls += 1
            root = await self.access.get_pipeline_run_node(who, run_id, node_id, depth=self.settings.inside_depth)
            self._last_read[key] = self.clock()
            patch = inside.nodes_summary(root, self.wallclock())
            events: list[Event] = []
            if kind == END:
                patch["nodes"]["final"] = True
                patch.update(await self._end_details(tracked, who, run_id, node_id, root))
                failed = patch.get("failure")
                if failed:
                    events.append(Event("Warning", REASON_NODE_FAILED, inside.failure_event(failed)))
        except PaiError as exc:
            log.debug("inside read of %s/%s: %s", key[0], key[1], exc.describe(with_request_id=False))
            self._retry(tracked, kind)
            return
        current = self.lookup(key)
        if current is not tracked:
            return  # deleted or replaced meanwhile
        if kind == PROGRESS and read_kind(tracked, self.settings.inside) != PROGRESS:
            self.note(tracked)  # the run ended while we read: its end read (queued by note) supersedes this
            return
        if kind == PROGRESS and not _changed(tracked.status, patch):
            self._queue(key, PROGRESS, self._last_read[key] + self.interval)
            return  # nothing new: no write
        await self.write(tracked, patch, events)
        self._attempts.pop(key, None)
        self.note(tracked)

    async def _end_details(self, tracked: Tracked, who: Any, run_id: str, node_id: str, root: Any) -> dict[str, Any]:
        run_status = tracked.status.get("runStatus")
        if run_status == RunStatus.FAILED.value:
            failed = inside.failed_nodes(root)
            lines: list[str] | None = None
            if failed:
                self.calls += 1
                page = await self.access.list_pipeline_run_node_logs(
                    who, run_id, failed[0].node_id, page_size=inside.LOG_TAIL_LINES, reverse=True
                )
                lines = list(reversed(page.logs))
            detail = inside.failure(root, lines, secrets=await self._secrets(who))
            return {"failure": detail} if detail else {}
        if run_status == RunStatus.SUCCEEDED.value:
            self.calls += 1
            listed = await self.access.list_pipeline_run_node_outputs(who, run_id, node_id, page_size=50)
            names = {n.node_id: (n.display_name or n.name or n.node_id) for n in inside.all_nodes(root)}
            return inside.outputs(listed.outputs, listed.total_count, names)
        return {}

    async def _secrets(self, who: Any) -> list[str]:
        """What the run's own calls were signed with: never to appear in a log tail."""
        found: list[str] = []
        with contextlib.suppress(Exception):
            creds = await (await self.access.credentials(who)).get()
            found += [creds.access_key_secret, creds.security_token or ""]
        with contextlib.suppress(Exception):
            found.append(await self.access.share_token(who) or "")
        return [s for s in found if s]


def _changed(status: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether progress or the node summary differ from what the status shows (observedAt aside)."""
    if status.get("progress") != patch.get("progress"):
        return True
    return _plain(status.get("nodes")) != _plain(patch.get("nodes"))


def _plain(nodes: Any) -> dict[str, Any]:
    # As the API server keeps it: a merge patch drops nulls.
    return {k: v for k, v in (nodes or {}).items() if v is not None and k != "observedAt"}
