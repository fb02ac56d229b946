"""Carries out launch_reconcile's decisions: ListPipelineRuns, CreatePipelineRun, TerminatePipelineRun, the
intent record in status and the finalizer. The scheduler calls ``step`` before polling a launched run; every
PAI call leaves through pai_access."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from paiflow_operator import metrics
from paiflow_operator.access.policy import Allowed
from paiflow_operator.access.view import AccessDenied
from paiflow_operator.api.runs import FINALIZER
from paiflow_operator.kube import KubeError
from paiflow_operator.pai.errors import BadRequestError, PaiError
from paiflow_operator.pai_access import Action, PaiAccess
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


class LaunchKube(Protocol):
    """What the launcher writes itself: the finalizer (metadata); it reads the manifest's ConfigMap. Status and
    Events go through the run writer (writes.py)."""

    async def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str | None
    ) -> dict[str, Any]: ...

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str]: ...


Outcome = Retry | float | None  # a retry policy, seconds to wait, or None: go on and poll the run now


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
            decision = core.decide(view, now, self.settle)
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
                if not self.ownership.owns(tracked.uid):
                    return Retry.STOP  # handed over (Lease membership changed): the new owner launches
                # A launch the access policies refuse writes no claim: that would only make its first allowed
                # attempt wait the settle time for a create that was never sent.
                allowed = self.access.decide(caller(tracked, Action.LAUNCH, self.access.region(tracked.spec.regionId)))
                if not isinstance(allowed, Allowed):
                    return await self._failed(tracked, "CreatePipelineRun", AccessDenied(allowed))
                written = await self._write(tracked, core.claim(view, now), conditional=True)
                if written is not True:
                    return written
                outcome = await self._lookup(tracked, create=True)
            elif step is core.Step.LOOKUP:
                outcome = await self._lookup(tracked, create=False)
            else:
                outcome = await self._terminate(tracked)
            if outcome is not None:
                return outcome
            if not tracked.deleting and step is not core.Step.LOOKUP:
                return None  # created, adopted or terminating: poll it now
        return Retry.BACKOFF

    # ---- PAI ---------------------------------------------------------------------------------------

    async def _lookup(self, tracked: Tracked, *, create: bool) -> Outcome:
        """ListPipelineRuns(WorkspaceId, Name) first, always; CreatePipelineRun only if nothing is there."""
        view = self.view(tracked)
        launch = tracked.spec.launch
        assert launch is not None
        name = core.run_name(view)
        who = caller(tracked, Action.LAUNCH, self.access.region(tracked.spec.regionId))
        try:
            listing = await self.access.list_pipeline_runs(who, workspace_id=launch.workspaceId, name=name)
        except PaiError as exc:
            return await self._failed(tracked, "ListPipelineRuns", exc)
        found, count = core.find_run(listing.pipeline_runs, name)
        if found is not None:
            log.info("%s/%s: adopting PAI run %s", tracked.namespace, tracked.name, found.pipeline_run_id)
            result = core.created(view, found.pipeline_run_id, adopted=True, duplicates=count)
            return self._after_write(await self._write(tracked, result))
        if not create:
            if not tracked.deleting:
                # spec.terminate while a create was unconfirmed, and none was made: none will be.
                written = await self._write(tracked, core.cancelled(view, self.wallclock()))
                return Retry.STOP if written is True else written
            # Deleting, and no run was ever made: nothing to terminate, the finalizer can go.
            return await self._finalizer(tracked, add=False) or Retry.STOP
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
        if not self.ownership.owns(tracked.uid):
            # Ownership moved while we looked: leave the create to the new owner. The claim we wrote makes it
            # wait the settle time and look up first, as for any create whose outcome it cannot know.
            return Retry.STOP
        request = core.create_request(view, manifest)
        try:
            answer = await self.access.create_pipeline_run(
                who,
                workspace_id=request.workspace_id,
                name=request.name,
                pipeline_id=request.pipeline_id,
                pipeline_manifest=request.manifest,
                arguments=request.arguments,
                options=request.options,
                accessibility=request.accessibility,
                source_id=request.source_id,
            )
        except PaiError as exc:
            return await self._failed(tracked, "CreatePipelineRun", exc)
        log.info("%s/%s: created PAI run %s", tracked.namespace, tracked.name, answer.pipeline_run_id)
        return self._after_write(await self._write(tracked, core.created(view, answer.pipeline_run_id, adopted=False)))

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

    async def _write(self, tracked: Tracked, result: SyncResult, *, conditional: bool = False) -> bool | Outcome:
        """Status patch then Events, through the run writer. True when written; otherwise when to try again."""
        if result.patch:
            try:
                await self.writer.write_status(
                    tracked, result.patch, resource_version=tracked.resource_version if conditional else None
                )
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
