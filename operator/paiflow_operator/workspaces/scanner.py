"""PaiWorkspace scans (the I/O): one ListPipelineRuns scan per workspace per interval, fed to the runs and the planner.

A scan reads PAI's rows newest modification first and pages until it passes the previous scan's first-page
high-water mark minus an overlap. PAI pages by offset, so rows can shift while we page: a run modified
mid-scan jumps to page 1, which was already read. Two things make that harmless: a scan of more than one
page ends by reading page 1 again (the jumped run is there), and the next scan's cut-off is taken from the
first page of this one, so whatever changed after it began is read again next time anyway. New rows pushing
others down only cause duplicates (the newest modification of a run wins). Every so often (and whenever runs
of the workspace wait for a first status) the cut-off is the import window's start instead: a full scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.access.policy import ACCESS_REASONS, Allowed
from paiflow_operator.api.runs import parse_duration
from paiflow_operator.api.workspaces import PaiWorkspaceSpec
from paiflow_operator.conditions import Event, find_condition
from paiflow_operator.guards.ratelimit import TokenBucket
from paiflow_operator.kube import KubeError, ObjectRef
from paiflow_operator.pai.errors import PaiError
from paiflow_operator.pai.models import PipelineRun, RunList
from paiflow_operator.pai_access import Action, Caller, PaiAccess, identity_key
from paiflow_operator.replicas.sharding import Ownership
from paiflow_operator.runs.scan_feed import ScanKey
from paiflow_operator.settings import Settings
from paiflow_operator.workspaces import plan as workspace_plan
from paiflow_operator.workspaces import status as workspace_status
from paiflow_operator.workspaces.pages import scan_pages
from paiflow_operator.workspaces.plan import Existing, WorkspaceRef

log = logging.getLogger(__name__)

SORT_BY = "GmtModifiedTime"
KIND = "PaiWorkspace"
CREATE_CHUNK = 100
HURRY_SECONDS = 1.0


class RunFeed(Protocol):
    """What a scan tells the runs (runs/): which scans run, their rows, the runs it created."""

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None: ...

    def begin_scan(self, key: ScanKey, interval: float) -> None: ...

    def end_scan(self, key: ScanKey) -> None: ...

    def unsynced(self, key: ScanKey) -> int: ...

    def set_hurry(self, hurry: Callable[[ScanKey], None]) -> None: ...

    def apply_rows(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> int: ...

    def apply_page(self, key: ScanKey, rows: Mapping[str, PipelineRun]) -> dict[str, PipelineRun]: ...

    def rows_applied(self) -> Awaitable[None]: ...


class WorkspaceKube(Protocol):
    async def create_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def delete_run(self, namespace: str, name: str, uid: str) -> None: ...

    async def patch_workspace_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    async def create_event(self, ref: ObjectRef, event: Event, now: datetime | None = None) -> None: ...


# ---- the index of PaiPipelineRuns the planner needs ------------------------------------------------------


class RunIndex:
    """Every PaiPipelineRun of the watched namespaces, reduced to what the planner needs (all shards: a
    replica that does not poll a run must still not import it twice)."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, Existing]] = {}

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        namespace, uid = meta.get("namespace", ""), meta.get("uid", "")
        items = self._by_namespace.setdefault(namespace, {})
        if event_type == "DELETED":
            items.pop(uid, None)
            return
        existing = workspace_plan.existing_from_body(body)
        if existing is not None:
            items[uid] = existing

    def in_namespace(self, namespace: str) -> Iterable[Existing]:
        return list(self._by_namespace.get(namespace, {}).values())


# ---- one workspace -----------------------------------------------------------------------------------------


def next_slot(now: float, interval: float, uid: str) -> float:
    """Seconds until this workspace's next scan: at its own phase of the interval (from its uid), at least half
    an interval away. Workspaces listed together (a start, a first sync that paced them all alike) otherwise
    scan in step for good, and a mass change then reaches the writes all at once, once per interval, rather
    than spread over it: measured at 10,000 runs, nothing shown for the first 20 s of a mass finish."""
    phase = zlib.crc32(uid.encode()) / 2**32 * interval
    slot = phase + interval * math.ceil((now + interval / 2 - phase) / interval)
    return slot - now


@dataclass
class Watched:
    ref: WorkspaceRef
    generation: int
    spec: PaiWorkspaceSpec
    status: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    key: ScanKey | None = None
    cutoff: datetime | None = None
    last_full: float | None = None
    imported: int = 0
    deleted: int = 0
    last_status_write: float | None = None
    # A scan is already brought forward for runs waiting for their first status.
    hurried: bool = False


class WorkspaceScanner:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        kube: WorkspaceKube,
        runs: RunFeed,
        ownership: Ownership,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.access = access
        self.kube = kube
        self.runs = runs
        self.ownership = ownership
        self.clock = clock
        self.wallclock = wallclock
        self.index = RunIndex()
        self.workspaces: dict[tuple[str, str], Watched] = {}
        self.creates = TokenBucket(settings.workspace_create_qps, settings.workspace_create_burst, clock)
        runs.set_hurry(self.hurry)

    def _cap(self, ws: Watched) -> int:
        """Imported runs the workspace's namespace may hold: the operator's hard ceiling, or its access policy's
        limits.maxImportedRuns if lower."""
        ceiling = self.settings.max_imported_runs_per_namespace
        decision = self.access.decide(self.caller(ws))
        own = decision.max_imported_runs if isinstance(decision, Allowed) else None
        return ceiling if own is None else min(own, ceiling)

    # ---- fed by the watches --------------------------------------------------------------------------

    def observe_run(self, body: Mapping[str, Any], event_type: str | None) -> None:
        self.index.observe(body, event_type)

    def hurry(self, key: ScanKey) -> None:
        """A hand-written run this replica tracks, never read from PAI, that the last scan of its workspace had
        no row for (runs/scan_feed.py) brings the next scan forward (by a second, so that a burst of new runs
        shares one scan): its first status then comes from a row."""
        for ws in self.workspaces.values():
            if ws.key == key and not ws.hurried:
                ws.hurried = True
                asyncio.get_running_loop().call_later(HURRY_SECONDS, ws.wake.set)

    def observe_workspace(self, body: Mapping[str, Any], event_type: str | None) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        current = self.workspaces.get(key)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self._drop(key)
            return
        try:
            spec = PaiWorkspaceSpec.model_validate(body.get("spec") or {})
        except ValueError as exc:
            log.warning("ignoring PaiWorkspace %s/%s with an invalid spec: %s", key[0], key[1], exc)
            self._drop(key)
            return
        ref = WorkspaceRef(key[0], key[1], meta.get("uid", ""))
        generation = int(meta.get("generation") or 0)
        status = dict(body.get("status") or {})
        if current is not None and current.ref.uid != ref.uid:
            self._drop(key)
            current = None
        if current is None:
            current = Watched(ref, generation, spec, status)
            current.imported = int(status.get("imported") or 0)
            current.deleted = int(status.get("deleted") or 0)
            self.workspaces[key] = current
            current.task = asyncio.get_running_loop().create_task(self._loop(current), name=f"paiws-{key[1]}")
            return
        changed = generation != current.generation
        current.generation, current.spec, current.status = generation, spec, status
        if changed:
            current.cutoff = None  # filters or window may have changed: read the window again
            current.wake.set()

    def _drop(self, key: tuple[str, str]) -> None:
        watched = self.workspaces.pop(key, None)
        if watched is None:
            return
        if watched.task is not None:
            watched.task.cancel()
        if watched.key is not None:
            self.runs.end_scan(watched.key)

    def recheck_denied(self) -> None:
        """The access policies changed: workspaces they held back scan again now (allowed ones that are now
        denied stop at their next scan, which the door refuses)."""
        for ws in self.workspaces.values():
            ready = find_condition(list(ws.status.get("conditions") or []), "Ready")
            if ready is not None and ready.get("reason") in ACCESS_REASONS:
                ws.cutoff = None
                ws.wake.set()

    async def stop(self) -> None:
        tasks = [w.task for w in self.workspaces.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the loop ----------------------------------------------------------------------------------------

    def scan_key(self, ws: Watched) -> ScanKey:
        identity = identity_key(ws.ref.namespace, ws.spec.credentialsSecretRef)
        return (self.access.region(ws.spec.regionId), ws.spec.workspaceId, identity)

    def caller(self, ws: Watched) -> Caller:
        """Who asks PAI for this workspace's scans."""
        spec = ws.spec
        region = self.access.region(spec.regionId)
        return Caller(
            ws.ref.namespace, KIND, ws.ref.name, Action.IMPORT, region, spec.workspaceId, spec.credentialsSecretRef
        )

    async def _loop(self, ws: Watched) -> None:
        interval = self.settings.workspace_scan_interval.total_seconds()
        while True:
            key = self.scan_key(ws)
            if ws.key is not None and ws.key != key:
                self.runs.end_scan(ws.key)
            active = self.ownership.owns(ws.ref.uid) and not ws.spec.suspend
            # Cleared before the scan, so that a wake-up during it (a new run, a spec change) is not lost.
            ws.hurried = False
            ws.wake.clear()
            if active:
                ws.key = key
                self.runs.begin_scan(key, interval)
                try:
                    await self.scan_once(ws)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scan of PaiWorkspace %s/%s failed unexpectedly", ws.ref.namespace, ws.ref.name)
            else:
                if ws.key is not None:
                    self.runs.end_scan(ws.key)
                    ws.key = None
                if ws.spec.suspend and self.ownership.owns(ws.ref.uid):
                    await self._write_status(
                        ws, workspace_status.suspended(ws.status, ws.generation, self.wallclock())
                    )  # writes only a change
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wake.wait(), next_slot(self.clock(), interval, ws.ref.uid))

    async def scan_once(self, ws: Watched) -> None:
        s = self.settings
        key = self.scan_key(ws)
        now = self.wallclock()
        window_start = now - parse_duration(ws.spec.importWindow)
        full = (
            ws.cutoff is None
            or ws.last_full is None
            or self.clock() - ws.last_full >= s.workspace_full_scan_interval.total_seconds()
            or self.runs.unsynced(key) > 0
        )
        cutoff = window_start if full or ws.cutoff is None else ws.cutoff
        taken: dict[str, PipelineRun] = {}  # rows runs never shown took as their page arrived

        def first_rows(page_rows: dict[str, PipelineRun]) -> None:
            taken.update(self.runs.apply_page(key, page_rows))

        try:
            who = self.caller(ws)
            pages = await scan_pages(
                lambda page: self._fetch(ws, who, page),
                cutoff,
                s.workspace_page_size,
                s.workspace_max_pages,
                # Only a full scan can meet runs never shown (a first one, or one for runs not read yet): an
                # incremental scan in a burst costs no look through every tracked run per page.
                on_page=first_rows if full else None,
            )
        except PaiError as exc:
            metrics.SYNC_ERRORS.labels(exc.kind.value).inc()
            failed = workspace_status.failed(ws.status, ws.generation, exc, self.wallclock())
            await self._write_status(ws, failed, error=exc)
            return
        if pages.first_page_newest is not None:
            ws.cutoff = pages.first_page_newest - s.workspace_scan_overlap
        elif ws.cutoff is None:
            ws.cutoff = window_start
        if full:
            ws.last_full = self.clock()
        rows = pages.rows
        # Runs this replica already tracks (hand-written or imported) take their rows first; a row a run took
        # as its page arrived is not handed to it twice (a newer row of it, from the re-read page 1, is).
        self.runs.apply_rows(key, {run_id: row for run_id, row in rows.items() if taken.get(run_id) is not row})
        plan = workspace_plan.plan(
            ws.ref, ws.spec, rows.values(), self.index.in_namespace(ws.ref.namespace), now, self._cap(ws)
        )
        created = await self._create(ws, key, plan.creates, rows)
        await self._delete(ws, plan.deletes)  # counted in ws.deleted
        # Paced by the writes: the next scan only after the rows handed over so far are written (in a burst,
        # thousands wait their turn). A scan meanwhile finds those same rows again, and costs a page read and
        # this workspace's status write for each, in the API server's busiest moments.
        await self.runs.rows_applied()
        counts = workspace_plan.counts_after(plan, (rows[r].raw_status or rows[r].status.value for r in created))
        desired = workspace_status.scanned(
            ws.status, ws.generation, ws.spec, plan, counts, ws.imported, ws.deleted, now
        )
        await self._write_status(ws, desired)

    async def _fetch(self, ws: Watched, who: Caller, page: int) -> RunList:
        s = self.settings
        query = workspace_plan.list_query(ws.spec)
        return await self.access.list_pipeline_runs(
            who,
            workspace_id=ws.spec.workspaceId,
            page_number=page,
            page_size=s.workspace_page_size,
            sort_by=SORT_BY,
            order="DESC",
            **query,
        )

    async def _create(
        self, ws: Watched, key: ScanKey, bodies: list[dict[str, Any]], rows: Mapping[str, PipelineRun]
    ) -> list[str]:
        """Creates the planned PaiPipelineRuns; returns the run ids of those created."""
        created: list[str] = []
        for start in range(0, len(bodies), CREATE_CHUNK):
            chunk = bodies[start : start + CREATE_CHUNK]
            answers = await asyncio.gather(*(self._create_one(ws, body) for body in chunk))
            fresh: dict[str, PipelineRun] = {}
            for answer in answers:
                if answer is None:
                    continue
                self.index.observe(answer, "ADDED")
                self.runs.observe(answer, "ADDED")
                run_id = answer["spec"]["pipelineRunId"]
                fresh[run_id] = rows[run_id]
                created.append(run_id)
            # The first status comes straight from the row: a create and one status write per run.
            self.runs.apply_rows(key, fresh)
        ws.imported += len(created)
        return created

    async def _create_one(self, ws: Watched, body: dict[str, Any]) -> dict[str, Any] | None:
        await self.creates.acquire()
        try:
            answer = await self.kube.create_run(ws.ref.namespace, body)
        except KubeError as exc:
            if exc.status != 409:
                log.warning("creating %s/%s failed: %s", ws.ref.namespace, body["metadata"]["name"], exc)
            # 409: the name is taken by a resource that follows another run: left alone, never taken over.
            return None
        metrics.KUBE_WRITES.labels("create").inc()
        return answer

    async def _delete(self, ws: Watched, items: list[Existing]) -> int:
        deleted = 0
        for item in items:
            try:
                await self.kube.delete_run(ws.ref.namespace, item.name, item.uid)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    log.warning("deleting %s/%s failed: %s", ws.ref.namespace, item.name, exc)
                continue
            metrics.KUBE_WRITES.labels("delete").inc()
            deleted += 1
        ws.deleted += deleted
        return deleted

    # ---- status --------------------------------------------------------------------------------------------

    async def _write_status(self, ws: Watched, desired: dict[str, Any], error: PaiError | None = None) -> None:
        current = ws.status
        patch = workspace_status.changes(current, desired)
        heartbeat_due = ws.last_status_write is None or (
            self.clock() - ws.last_status_write >= self.settings.workspace_status_heartbeat.total_seconds()
        )
        if set(patch) <= {"lastScanTime"} and not heartbeat_due:
            return  # an unchanged scan costs no write
        if not patch:
            return
        previous = workspace_status.ready(current)
        try:
            written = await self.kube.patch_workspace_status(ws.ref.namespace, ws.ref.name, patch)
        except KubeError as exc:
            log.warning("status write for PaiWorkspace %s/%s failed: %s", ws.ref.namespace, ws.ref.name, exc)
            return
        metrics.KUBE_WRITES.labels("status").inc()
        ws.last_status_write = self.clock()
        ws.status = dict(written.get("status") or {**current, **patch})
        ready = workspace_status.ready(ws.status)
        if ready is not None and (previous is None or previous.get("reason") != ready.get("reason")):
            event = Event(
                "Warning" if ready.get("status") != "True" else "Normal",
                str(ready.get("reason")),
                str(error) if error else str(ready.get("message")),
            )
            with contextlib.suppress(Exception):
                ref = ObjectRef(ws.ref.namespace, ws.ref.name, ws.ref.uid, None, kind="PaiWorkspace")
                await self.kube.create_event(ref, event, self.wallclock())
