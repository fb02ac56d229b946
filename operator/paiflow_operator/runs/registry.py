"""What is tracked: the runs this replica owns, kept current from the runs' watch; forget, rebalance, snapshot.

A new run is scheduled for its first look (spread by a jitter, after a workspace scan that can answer for it);
a changed spec earns one fresh look, also at a finished run; a terminal status this operator did not write is
confirmed once with PAI; a finished run's conditions edited by someone else are restored from its runStatus.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from paiflow_operator import metrics
from paiflow_operator.api.runs import FINALIZER, PaiPipelineRunSpec, without_launch_payload
from paiflow_operator.conditions import parse_timestamp
from paiflow_operator.kube import FIELD_MANAGER
from paiflow_operator.replicas.sharding import Ownership
from paiflow_operator.runs.due import DueQueue
from paiflow_operator.runs.launcher import Launcher
from paiflow_operator.runs.reconcile import is_finished
from paiflow_operator.runs.tracked import Key, Tracked, compact, runstatus_manager
from paiflow_operator.settings import Settings

log = logging.getLogger(__name__)


def conditions_edited_by_others(meta: Mapping[str, Any]) -> bool:
    """Someone other than the operator last set some of status.conditions (managedFields, kept by the API server)."""
    for entry in meta.get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:status") or {}
        if "f:conditions" in fields and entry.get("manager") != FIELD_MANAGER:
            return True
    return False


def launch_pending(launcher: Launcher | None, tracked: Tracked) -> bool:
    """Launch work is left for this run (create, terminate, a finalizer to remove)."""
    if tracked.spec.suspend and not tracked.deleting:
        return False  # a suspended launch waits for the spec change that unsuspends it
    return launcher is not None and launcher.wants(tracked)


def _same_spec(tracked: Tracked, uid: str | None, generation: int, status: Mapping[str, Any]) -> bool:
    """The event's spec is the one the record holds: same object, same generation, and no launch payload that
    the run's existence (status.pipelineRunId) now lets go of."""
    if tracked.uid != uid or tracked.generation != generation:
        return False
    launch = tracked.spec.launch
    return launch is None or not status.get("pipelineRunId") or (not launch.manifest and launch.arguments is None)


class Registry:
    def __init__(
        self,
        settings: Settings,
        ownership: Ownership,
        due: DueQueue,
        first_sync_wait: Callable[[Tracked], float],
        launcher: Launcher | None,
        *,
        clock: Callable[[], float],
        wallclock: Callable[[], datetime],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.ownership = ownership
        self.due = due
        # How long a new run waits for a workspace scan to answer for it (scan_feed.Scans.first_sync_wait).
        self.first_sync_wait = first_sync_wait
        self.launcher = launcher
        self.clock = clock
        self.wallclock = wallclock
        self.rng = rng
        self.runs: dict[Key, Tracked] = {}
        # Puts a finished run's conditions back from its runStatus, no PAI call (sync.Sync.restore_conditions).
        self.restore_conditions: Callable[[Tracked], None] = lambda tracked: None
        # Hands a new run its workspace's last scan row, if there is one (scan_feed.ScanFeed.feed_new).
        self.first_row: Callable[[Tracked], bool] = lambda tracked: False

    def observe(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Called for every watch event (watching.py): keeps the registry and the heap current."""
        meta = body.get("metadata", {})
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        finalizers = tuple(meta.get("finalizers") or ())
        deleting = bool(meta.get("deletionTimestamp"))
        if event_type == "DELETED" or (deleting and FINALIZER not in finalizers) or not self.owns(meta.get("uid", "")):
            self.forget(key)
            return
        generation = int(meta.get("generation") or 0)
        tracked = self.runs.get(key)
        if tracked is not None and _same_spec(tracked, meta.get("uid"), generation, body.get("status") or {}):
            # The echo of a status write (most events here): the spec validated before stands. A custom resource
            # with a status subresource bumps its generation on every spec change.
            spec = tracked.spec
        else:
            try:
                # A launched run's manifest and arguments are not kept once the run exists.
                spec = PaiPipelineRunSpec.model_validate(
                    without_launch_payload(body.get("spec") or {}, body.get("status") or {})
                )
            except ValueError as exc:
                # The CRD's schema makes this unreachable short of a schema change; never crash the watch.
                log.warning("ignoring %s/%s with an invalid spec: %s", key[0], key[1], exc)
                self.forget(key)
                return
        status = compact(body.get("status") or {})
        if tracked is None or tracked.uid != meta.get("uid"):
            tracked = Tracked(key[0], key[1], meta.get("uid", ""), generation, spec, status, since=self.clock())
            tracked.resource_version = meta.get("resourceVersion")
            tracked.last_detail = self._detail_age_from_status(status)
            tracked.deleting, tracked.finalizers = deleting, finalizers
            self.runs[key] = tracked
            pending = self._needs_confirmation(tracked, meta) or launch_pending(self.launcher, tracked)
            if not is_finished(status, generation) or spec.suspend or pending:
                jitter = self.rng.uniform(0, self.settings.initial_jitter.total_seconds())
                self.due.schedule(tracked, self.clock() + jitter + self.first_sync_wait(tracked))
                self.first_row(tracked)
            elif conditions_edited_by_others(meta):
                self.restore_conditions(tracked)  # edited while the operator was down
            return
        spec_changed = generation != tracked.generation
        tracked.generation, tracked.spec, tracked.status = generation, spec, status
        tracked.resource_version = meta.get("resourceVersion")
        newly_deleting = deleting and not tracked.deleting
        tracked.deleting, tracked.finalizers = deleting, finalizers
        if not spec_changed and tracked.due is None and not tracked.busy and self._needs_confirmation(tracked, meta):
            # Someone else wrote a terminal status into a run this operator had finished with: ask PAI once.
            self.due.schedule(tracked, self.clock())
            return
        idle = tracked.due is None and not tracked.busy and not spec_changed and not newly_deleting
        if (
            idle
            and is_finished(status, generation)
            and conditions_edited_by_others(meta)
            and not launch_pending(self.launcher, tracked)
        ):
            self.restore_conditions(tracked)
            return
        if not spec_changed and newly_deleting and tracked.busy:
            tracked.rerun = True  # a delete to act on: look again as soon as the poll in flight ends
        soon = tracked.due is None or newly_deleting
        if not spec_changed and not tracked.busy and soon and launch_pending(self.launcher, tracked):
            # Launch work with nothing scheduled soon (a delete, a finished run still holding the finalizer).
            self.due.schedule(tracked, self.clock())
        if spec_changed:
            # A changed spec earns one fresh look, even at a finished run.
            tracked.attempt = 0
            tracked.last_detail = None
            if tracked.busy:
                tracked.rerun = True
            else:
                self.due.schedule(tracked, self.clock())

    def _needs_confirmation(self, tracked: Tracked, meta: Mapping[str, Any]) -> bool:
        """A terminal status that this operator did not write is confirmed once with PAI before it is trusted.

        Polling stops at a terminal status, so a forged one (a user with access to the status subresource,
        before the operator's next poll or while it is down) would otherwise stand for good. Who last set
        status.runStatus is in the object's managedFields, which the API server keeps.
        """
        if not is_finished(tracked.status, tracked.generation) or tracked.spec.suspend:
            return False
        if tracked.resource_version is not None and tracked.resource_version == tracked.confirmed_version:
            return False
        return runstatus_manager(meta) != FIELD_MANAGER

    def _detail_age_from_status(self, status: Mapping[str, Any]) -> float | None:
        """After a restart, a status confirmed recently needs no fresh GetPipelineRun: batching can answer."""
        synced = parse_timestamp(status.get("lastSyncTime"))
        if synced is None or status.get("runStatus") is None:
            return None
        age = (self.wallclock() - synced).total_seconds()
        return self.clock() - max(age, 0.0)

    def owns(self, uid: str) -> bool:
        return self.ownership.owns(uid)

    def forget(self, key: Key) -> None:
        # Dropping the entry is enough: heap entries and in-flight results for it are ignored.
        self.runs.pop(key, None)

    def rebalance(self) -> list[dict[str, Any]]:
        """Forgets, at once, the runs this replica no longer owns (the members changed) and returns each as a
        watch body, for handover.Handover to keep until they are this replica's again."""
        released = []
        for key, tracked in list(self.runs.items()):
            if not self.owns(tracked.uid):
                self.forget(key)
                meta: dict[str, Any] = {"namespace": tracked.namespace, "name": tracked.name, "uid": tracked.uid}
                meta |= {"generation": tracked.generation, "resourceVersion": tracked.resource_version}
                spec = tracked.spec.model_dump(mode="json", exclude_none=True)
                released.append({"metadata": meta, "spec": spec, "status": tracked.status})
        return released

    def snapshot(self, held: Callable[[Tracked], bool]) -> Iterable[metrics.RunSnapshot]:
        for run in list(self.runs.values()):
            # Active: anything still to be read from PAI, also while it waits for a rate-limit token or is held
            # by an open circuit (its due time is cleared then, but its status is getting older all the same).
            active = run.due is not None or run.busy or held(run)
            yield metrics.RunSnapshot(run.status.get("runStatus"), active, run.last_ok, run.since)
