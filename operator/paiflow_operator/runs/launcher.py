"""Carries out launch_reconcile's decisions: the claim, CreatePipelineRun (unstarted), the record, StartPipelineRun,
the lookups and sweeps (ListPipelineRuns, every page; DeletePipelineRun of unstarted duplicates), TerminatePipelineRun
and the finalizer. The scheduler calls ``step`` before polling a launched run; every PAI call leaves through
pai_access."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.api.runs import FINALIZER
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.errors import BadRequestError, ErrorKind, PaiError
from paiflow_operator.pai.models import PipelineRun, RunList, RunStatus
from paiflow_operator.pai.paging import ALL_PAGES_ORDER, collect_pages
from paiflow_operator.pai_access import Action, Caller, PaiAccess
from paiflow_operator.replicas.sharding import Ownership
from paiflow_operator.runs import launch_reconcile as core
from paiflow_operator.runs.reconcile import Retry, SyncResult
from paiflow_operator.runs.tracked import Tracked, caller
from paiflow_operator.runs.writes import RunWriter
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)

# One step may chain a few decisions (add finalizer, claim, look up, create); never loop for ever.
MAX_CHAINED_STEPS = 6
CONFLICT_RETRY_SECONDS = 1.0
# A lookup reads every page of this resource's runs (by SourceId and name: a handful at most), within a bound.
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_PAGES = 20


class LaunchKube(Protocol):
    """What the launcher writes itself: the finalizer (metadata); it reads the manifest's ConfigMap. Status and
    Events go through the run writer (writes.py)."""

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]: ...

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]: ...


Outcome = Retry | float | None  # a retry policy, seconds to wait, or None: go on and poll the run now


class _NotSent(Exception):
    """Raised from inside the door, before the create leaves: ownership moved or the claim was not written."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("create not sent")
        self.outcome = outcome


class Launcher:
    def __init__(
        self,
        settings: Settings,
        access: PaiAccess,
        writer: RunWriter,
        kube: LaunchKube,
        ownership: Ownership,
        *,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.access = access
        self.writer = writer
        self.kube = kube
        self.ownership = ownership
        self.wallclock = wallclock
        self.settle = settings.launch_settle_time
        self.window = settings.launch_orphan_window

    @staticmethod
    def view(tracked: Tracked) -> core.View:
        return core.View(
            name=tracked.name,
            uid=tracked.uid,
            generation=tracked.generation,
            spec=tracked.spec,
            status=tracked.status,
            deleting=tracked.deleting,
            finalized=FINALIZER in tracked.finalizers,
        )

    def wants(self, tracked: Tracked) -> bool:
        return (tracked.spec.launch is not None or FINALIZER in tracked.finalizers) and core.pending(self.view(tracked))

    async def step(self, tracked: Tracked) -> Outcome:
        for _ in range(MAX_CHAINED_STEPS):
            now = self.wallclock()
            view = self.view(tracked)
            decision = core.decide(view, now, self.settle, self.window)
            step = decision.step
            if step is core.Step.FOLLOW:
                return None
            if step is core.Step.FOLLOW_NOTHING:
                return Retry.STOP
            if step is core.Step.CANCEL:
                written = await self._write(tracked, core.cancelled(view, now))
                if written is not True:
                    return written
                continue
            if step is core.Step.DONE:
                return Retry.STOP
            if step is core.Step.WAIT:
                assert decision.at is not None
                return max(0.0, (decision.at - now).total_seconds())
            if step in (core.Step.ADD_FINALIZER, core.Step.REMOVE_FINALIZER):
                outcome = await self._finalizer(tracked, add=step is core.Step.ADD_FINALIZER)
                if outcome is not None:
                    return outcome
                if tracked.deleting and step is core.Step.REMOVE_FINALIZER:
                    return Retry.STOP  # the API server deletes the object now
                continue
            if step is core.Step.CLAIM:
                # Ownership, the access policies and the claim are checked and written inside the door, right
                # before the create leaves; a launch the policies refuse writes no claim (the door refuses first).
                outcome = await self._launch(tracked)
            elif step is core.Step.START:
                outcome = await self._start(tracked, trusted=None)
            elif step is core.Step.SWEEP:
                outcome = await self._sweep(tracked)
            elif step is core.Step.LOOKUP:
                outcome = await self._lookup(tracked)
            else:
                outcome = await self._terminate(tracked)
            if outcome is not None:
                return outcome
            if step is core.Step.TERMINATE and not tracked.deleting:
                return None  # terminating: poll it now
        return Retry.BACKOFF

    # ---- PAI ---------------------------------------------------------------------------------------

    def _who(self, tracked: Tracked, action: Action = Action.LAUNCH) -> Caller:
        return caller(tracked, action, self.access.region(tracked.spec.regionId))

    async def _list_mine(self, tracked: Tracked) -> list[PipelineRun]:
        """Every page of ListPipelineRuns for this resource's runs (WorkspaceId, SourceId, Name), each page a call of
        its own through the door. Raises PaiError."""
        view = self.view(tracked)
        launch = tracked.spec.launch
        assert launch is not None
        who = self._who(tracked)

        async def page(number: int, size: int) -> RunList:
            return await self.access.list_pipeline_runs(
                who,
                workspace_id=launch.workspaceId,
                name=core.run_name(view),
                source_id=view.uid,
                page_number=number,
                page_size=size,
                **ALL_PAGES_ORDER,
            )

        listing = await collect_pages(page, page_size=LOOKUP_PAGE_SIZE, max_pages=LOOKUP_MAX_PAGES)
        if len(listing.pipeline_runs) < listing.total_count:
            log.warning(
                "%s/%s: ListPipelineRuns holds %d rows for this resource's filters, read %d (bound reached)",
                tracked.namespace,
                tracked.name,
                listing.total_count,
                len(listing.pipeline_runs),
            )
        return list(listing.pipeline_runs)

    async def _launch(self, tracked: Tracked) -> Outcome:
        """Look up (only if a create may have made a run), claim, create unstarted, record, start."""
        view = self.view(tracked)
        # Every conditional write below is conditional on the object this decision was made on: the watch may
        # bring a newer one (another replica's claim) while we wait for PAI or for the door's slot and token.
        decided = tracked.resource_version
        launch = tracked.spec.launch
        assert launch is not None
        looked_up: datetime | None = None
        if core.needs_lookup(view):
            try:
                rows = await self._list_mine(tracked)
            except PaiError as exc:
                return await self._failed(tracked, "ListPipelineRuns", exc)
            looked_up = self.wallclock()
            sorting = core.sort_out(view, rows)
            if sorting.keep is not None:
                found = sorting.keep
                log.info("%s/%s: adopting PAI run %s", tracked.namespace, tracked.name, found.pipeline_run_id)
                # Conditional: a replica that claimed meanwhile may be recording its own run.
                written = await self._write(tracked, core.recorded(view, found, looked_up), resource_version=decided)
                if written is not True:
                    return written
                return await self._delete_duplicates(tracked, sorting)
        manifest: str | None = None
        if launch.manifestFrom is not None:
            ref = launch.manifestFrom
            try:
                manifest = (await self.kube.read_configmap(tracked.namespace, ref.name)).get(ref.key)
                problem = None if manifest else f"ConfigMap {ref.name} has no key {ref.key!r}"
            except KubeError as exc:
                problem = f"ConfigMap {ref.name} is not readable: {exc.status} {exc.reason}"
            if problem:
                await self._write(tracked, core.configmap_missing(view, problem, self.wallclock()))
                return Retry.SLOW
        request = core.create_request(view, manifest)
        claim_version: list[str | None] = []

        async def claim() -> None:
            # Inside the door: the slot and the rate token are held, so the request leaves right after this.
            # Ownership is checked at that moment (not before a wait for a token), and claimedAt is when it left.
            if not self.ownership.owns(tracked.uid):
                raise _NotSent(Retry.STOP)  # handed over (Lease membership changed): the new owner launches
            result = core.claim(view, self.wallclock(), looked_up)
            written = await self._write(tracked, result, resource_version=decided)
            if written is not True:
                raise _NotSent(written)
            claim_version.append(tracked.resource_version)

        try:
            answer = await self.access.create_pipeline_run(
                self._who(tracked),
                ready=claim,
                workspace_id=request.workspace_id,
                name=request.name,
                pipeline_id=request.pipeline_id,
                pipeline_manifest=request.manifest,
                arguments=request.arguments,
                options=request.options,
                accessibility=request.accessibility,
                no_confirm_required=False,  # created unstarted: only a recorded run is ever started
                source_id=request.source_id,
            )
        except _NotSent as not_sent:
            return not_sent.outcome
        except PaiError as exc:
            return await self._failed(tracked, "CreatePipelineRun", exc)
        run_id = answer.pipeline_run_id
        log.info("%s/%s: created PAI run %s (unstarted), recording it", tracked.namespace, tracked.name, run_id)
        # Conditional on the claim: if anyone wrote since (another replica's claim), this run is never recorded,
        # so never started; a later lookup adopts it or a sweep deletes it.
        result = core.recorded(self.view(tracked), run_id, self.wallclock())
        written = await self._write(tracked, result, resource_version=claim_version[0])
        if written is not True:
            return written
        return await self._start(tracked, trusted=run_id)

    async def _start(self, tracked: Tracked, *, trusted: str | None) -> Outcome:
        """StartPipelineRun for the recorded run. ``trusted``: the id this process just created and recorded; any
        other recorded id (after a restart, or written by someone else) is first read back from PAI, must be this
        resource's (name and SourceId), and is started only while still Initialized."""
        run_id = tracked.status.get("pipelineRunId")
        assert run_id
        view = self.view(tracked)
        who = self._who(tracked)
        try:
            if run_id != trusted:
                run = await self.access.get_pipeline_run(who, run_id)
                if not core.owned(view, run):
                    error = BadRequestError(
                        f"PAI run {run_id} is named {run.name!r} with SourceId {run.source_id!r}, not "
                        f"{core.run_name(view)!r} and {view.uid!r}: it was not launched by this resource and is not "
                        "started",
                        code="ForeignRun",
                    )
                    return await self._failed(tracked, "StartPipelineRun", error)
                if run.status is not RunStatus.INITIALIZED:
                    return self._after_write(await self._write(tracked, core.started_run(view, seen=run.status)))
            await self.access.start_pipeline_run(who, run_id)
        except PaiError as exc:
            if exc.kind is ErrorKind.BAD_REQUEST:
                # PAI may refuse a start because the run was started already (a start whose answer was lost).
                try:
                    run = await self.access.get_pipeline_run(who, run_id)
                except PaiError:
                    return await self._failed(tracked, "StartPipelineRun", exc)
                if core.owned(view, run) and run.status is not RunStatus.INITIALIZED:
                    return self._after_write(await self._write(tracked, core.started_run(view, seen=run.status)))
            return await self._failed(tracked, "StartPipelineRun", exc)
        log.info("%s/%s: started PAI run %s", tracked.namespace, tracked.name, run_id)
        return self._after_write(await self._write(tracked, core.started_run(self.view(tracked))))

    async def _sweep(self, tracked: Tracked) -> Outcome:
        """A later look for unstarted duplicates that a create of unknown outcome made and PAI lists late."""
        try:
            rows = await self._list_mine(tracked)
        except PaiError as exc:
            return await self._failed(tracked, "ListPipelineRuns", exc)
        return await self._delete_duplicates(tracked, core.sort_out(self.view(tracked), rows))

    async def _delete_duplicates(self, tracked: Tracked, sorting: core.Sorting) -> Outcome:
        """DeletePipelineRun for this resource's runs other than the one kept, never started (Initialized), then the
        account of it in status."""
        deleted: list[str] = []
        not_deleted: list[tuple[str, str]] = []
        who = self._who(tracked)
        for row in sorting.delete:
            try:
                await self.access.delete_pipeline_run(who, row.pipeline_run_id)
            except PaiError as exc:
                reason, _ = core.error_reason("DeletePipelineRun", exc, tracked.spec)
                not_deleted.append((row.pipeline_run_id, f"{reason}: {exc}"))
                continue
            log.info(
                "%s/%s: deleted unstarted duplicate PAI run %s", tracked.namespace, tracked.name, row.pipeline_run_id
            )
            deleted.append(row.pipeline_run_id)
        result = core.swept(self.view(tracked), self.wallclock(), sorting, deleted, not_deleted, self.window)
        return self._after_write(await self._write(tracked, result))

    async def _lookup(self, tracked: Tracked) -> Outcome:
        """Terminate or delete while a create is unconfirmed: what it made was never started, so it is deleted (a run
        of this resource already past Initialized, made by an earlier version, is adopted and terminated)."""
        view = self.view(tracked)
        decided = tracked.resource_version
        try:
            rows = await self._list_mine(tracked)
        except PaiError as exc:
            return await self._failed(tracked, "ListPipelineRuns", exc)
        sorting = core.sort_out(view, rows)
        keep = sorting.keep
        if keep is not None and keep.status is not RunStatus.INITIALIZED:
            result = core.recorded(view, keep, self.wallclock())
            written = await self._write(tracked, result, resource_version=decided)
            if written is not True:
                return written
            return await self._delete_duplicates(tracked, sorting)  # then TERMINATE
        unstarted = (keep, *sorting.delete) if keep is not None else sorting.delete
        outcome = await self._delete_duplicates(tracked, core.Sorting(keep=None, delete=unstarted, leave=sorting.leave))
        if outcome is not None:
            return outcome
        if not tracked.deleting:
            # spec.terminate while a create was unconfirmed: nothing will be started.
            written = await self._write(tracked, core.cancelled(self.view(tracked), self.wallclock()))
            return Retry.STOP if written is True else written
        # Deleting, and no run was ever started: nothing to terminate, the finalizer can go.
        return await self._finalizer(tracked, add=False) or Retry.STOP

    async def _terminate(self, tracked: Tracked) -> Outcome:
        run_id = tracked.status.get("pipelineRunId")
        assert run_id
        who = caller(tracked, Action.TERMINATE, self.access.region(tracked.spec.regionId))
        try:
            # status is writable by anyone granted the status subresource: terminate only a run that PAI itself
            # says is this resource's (its name ends with the uid), never an id someone wrote into status.
            run = await self.access.get_pipeline_run(who, run_id)
            if run.name != core.run_name(self.view(tracked)):
                error = BadRequestError(
                    f"PAI run {run_id} is named {run.name!r}, not {core.run_name(self.view(tracked))!r}: "
                    "it was not launched by this resource and is not terminated",
                    code="ForeignRun",
                )
                return await self._failed(tracked, "TerminatePipelineRun", error)
            await self.access.terminate_pipeline_run(who, run_id)
        except PaiError as exc:
            return await self._failed(tracked, "TerminatePipelineRun", exc)
        return self._after_write(await self._write(tracked, core.terminated(self.view(tracked), self.wallclock())))

    async def _failed(self, tracked: Tracked, action: str, error: PaiError) -> Outcome:
        result = core.failed(self.view(tracked), action, error, self.wallclock())
        metrics.SYNC_ERRORS.labels(result.error_reason or "Error").inc()
        await self._write(tracked, result)
        return result.retry

    # ---- Kubernetes --------------------------------------------------------------------------------

    @staticmethod
    def _after_write(written: bool | Outcome) -> Outcome:
        return None if written is True else written

    async def _write(
        self, tracked: Tracked, result: SyncResult, *, resource_version: str | None = None
    ) -> bool | Outcome:
        """Status patch then Events, through the run writer. True when written; otherwise when to try again.
        ``resource_version``: only if the object is still at it (the one a decision was made on, or the claim's
        for its record)."""
        if result.patch:
            try:
                await self.writer.write_status(tracked, result.patch, resource_version=resource_version)
            except KubeError as exc:
                if exc.status == 409:
                    # Someone wrote first (another replica, or a status we have not seen yet): decide again on
                    # the fresh object the watch brings.
                    log.info("%s/%s: status changed under us (409), deciding again", tracked.namespace, tracked.name)
                    return CONFLICT_RETRY_SECONDS
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
                return Retry.BACKOFF
            except Exception as exc:
                log.warning("status write for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
                return Retry.BACKOFF
        await self.writer.post_events(tracked, result.events)
        return True

    async def _finalizer(self, tracked: Tracked, *, add: bool) -> Outcome:
        current = list(tracked.finalizers)
        wanted = [*current, FINALIZER] if add else [f for f in current if f != FINALIZER]
        try:
            written = await self.kube.patch_finalizers(
                tracked.namespace, tracked.name, wanted, tracked.resource_version
            )
        except KubeError as exc:
            if exc.status == 409:
                return CONFLICT_RETRY_SECONDS
            if exc.status == 404:
                return Retry.BACKOFF  # already gone: the watch's DELETED event forgets it
            log.warning("finalizer update for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
            return Retry.BACKOFF
        except Exception as exc:
            log.warning("finalizer update for %s/%s failed: %s", tracked.namespace, tracked.name, exc)
            return Retry.BACKOFF
        metrics.KUBE_WRITES.labels("metadata").inc()
        meta = written.get("metadata") or {}
        tracked.finalizers = tuple(meta.get("finalizers") or ())
        tracked.resource_version = meta.get("resourceVersion")
        return None
